//! The userspace NFSv3 client of scripts/bench (this kernel has no NFS
//! client, and libnfs's cannot mount `rclone serve nfs`): one connection,
//! one call in flight, timed from the MOUNT to the last reply.
//!
//! ```sh
//! nfs_bench PORT ls  DIR  OUT   # READDIRPLUS of DIR: its names, one a line, into OUT
//! nfs_bench PORT cat FILE OUT   # FILE by 1 MiB READs into OUT
//! nfs_bench PORT get DIR  OUT   # every file of DIR (listed, then LOOKUP and READs
//!                               # each in turn) into the directory OUT
//! ```
//!
//! Paths are relative to the server's root export (`/`). Prints the seconds
//! the calls took; the bench checks what OUT holds. A measurement, not a
//! test: any failure panics.

use std::io::Write;
use std::time::Instant;

use nfs3_client::nfs3_types::nfs3::{READDIRPLUS3args, nfs_fh3};

/// The tests' NFS client calls.
#[allow(dead_code)]
#[path = "../tests/common/nfs.rs"]
mod nfs;

const PIECE: u32 = 1 << 20;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: nfs_bench PORT ls|cat|get PATH OUT";
    let port: u16 = args.get(1).and_then(|p| p.parse().ok()).expect(usage);
    let (mode, path, out) = match &args[2..] {
        [mode, path, out] => (mode.as_str(), path.as_str(), out.as_str()),
        _ => panic!("{usage}"),
    };
    let started = Instant::now();
    let mut conn = nfs::connect(port).await;
    let fh = nfs::walk(&mut conn, path.trim_matches('/')).await;
    match mode {
        "ls" => {
            let names = list(&mut conn, &fh).await;
            let text: String = names.iter().map(|name| format!("{name}\n")).collect();
            std::fs::write(out, text).expect("write OUT");
        }
        "cat" => {
            let mut file = std::io::BufWriter::new(std::fs::File::create(out).expect("create OUT"));
            copy(&mut conn, &fh, &mut file).await;
            file.flush().expect("write OUT");
        }
        "get" => {
            std::fs::create_dir_all(out).expect("create OUT");
            let mut names = list(&mut conn, &fh).await;
            names.retain(|name| name != "." && name != ".." && name != ".meta");
            names.sort();
            for name in names {
                let file_fh =
                    nfs::lookup(&mut conn, &fh, &name).await.unwrap_or_else(|e| panic!("lookup {name}: {e:?}"));
                let mut file = std::fs::File::create(format!("{out}/{name}")).expect("create a file in OUT");
                copy(&mut conn, &file_fh, &mut file).await;
            }
        }
        _ => panic!("{usage}"),
    }
    println!("{:.3}", started.elapsed().as_secs_f64());
    conn.unmount().await.ok();
}

/// Every name in a directory, by READDIRPLUS pages of 64 KiB. Unlike the
/// tests' `nfs::list`, an entry without attributes is no error: rclone's
/// server gives none for some.
async fn list(conn: &mut nfs::Conn, dir: &nfs_fh3) -> Vec<String> {
    let (mut names, mut cookie, mut cookieverf) = (Vec::new(), 0, Default::default());
    loop {
        let args = READDIRPLUS3args { dir: dir.clone(), cookie, cookieverf, dircount: 1 << 14, maxcount: 1 << 16 };
        let ok = conn.readdirplus(&args).await.expect("readdirplus call").unwrap();
        let entries = ok.reply.entries.into_inner();
        names.extend(entries.iter().map(|entry| String::from_utf8(entry.name.0.to_vec()).expect("utf-8 name")));
        if ok.reply.eof {
            return names;
        }
        cookie = entries.last().expect("a page before eof has entries").cookie;
        cookieverf = ok.cookieverf;
    }
}

/// The whole file by READs of up to PIECE bytes, in turn, until EOF.
async fn copy(conn: &mut nfs::Conn, fh: &nfs_fh3, out: &mut impl Write) {
    let mut offset = 0u64;
    loop {
        let (data, eof) = nfs::read(conn, fh, offset, PIECE).await;
        out.write_all(&data).expect("write OUT");
        offset += data.len() as u64;
        if eof {
            return;
        }
        assert!(!data.is_empty(), "an empty READ before EOF at {offset}");
    }
}
