//! Measures what `ciofs serve-nfs` moves through one NFS connection: a
//! file of SIZE MiB written with 1 MiB WRITEs (FILE_SYNC, in turn), then
//! read back with 1 MiB READs, RUNS times, PAUSE seconds apart (the server
//! uploads a file once it has been idle a second); prints each run and the
//! medians, and removes the files.
//!
//! ```sh
//! ciofs serve-nfs --project P --listen 127.0.0.1:0     # prints the port
//! cargo run --release --example nfs_throughput -- PORT P/storage/BUCKET [SIZE] [RUNS] [PAUSE]
//! ```
//!
//! The directory must exist (a bucket of project P). A measurement, not a
//! test: nothing is asserted.

use std::time::Instant;

use nfs3_client::nfs3_types::nfs3::{
    CREATE3args, READ3args, REMOVE3args, WRITE3args, createhow3, diropargs3, sattr3, stable_how,
};

/// The tests' NFS client calls.
#[allow(dead_code)]
#[path = "../tests/common/nfs.rs"]
mod nfs;

const PIECE: usize = 1 << 20;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: nfs_throughput PORT PROJECT/storage/BUCKET [SIZE_MIB] [RUNS] [PAUSE_SECONDS]";
    let port: u16 = args.get(1).and_then(|p| p.parse().ok()).expect(usage);
    let dir = args.get(2).expect(usage);
    let size_mib: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(256);
    let runs: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(5);
    let pause: f64 = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let mut conn = nfs::connect(port).await;
    let fh = nfs::walk(&mut conn, dir).await;
    let data: Vec<u8> = (0..PIECE).map(|i| (i * 31 % 251) as u8).collect();
    let (mut writes, mut reads) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let name = format!("throughput-{}-{run}.bin", std::process::id());
        let args = CREATE3args {
            where_: diropargs3 { dir: fh.clone(), name: name.as_bytes().into() },
            how: createhow3::UNCHECKED(sattr3::default()),
        };
        let file = conn.create(&args).await.expect("create call").unwrap().obj.unwrap();
        let started = Instant::now();
        for piece in 0..size_mib {
            let args = WRITE3args {
                file: file.clone(),
                offset: (piece * PIECE) as u64,
                count: PIECE as u32,
                stable: stable_how::FILE_SYNC,
                data: data.as_slice().into(),
            };
            conn.write(&args).await.expect("write call").unwrap();
        }
        let write = size_mib as f64 / started.elapsed().as_secs_f64();
        let started = Instant::now();
        let mut read_bytes = 0;
        for piece in 0..size_mib {
            let args = READ3args { file: file.clone(), offset: (piece * PIECE) as u64, count: PIECE as u32 };
            read_bytes += conn.read(&args).await.expect("read call").unwrap().data.len();
        }
        assert_eq!(read_bytes, size_mib * PIECE, "read back what was written");
        let read = size_mib as f64 / started.elapsed().as_secs_f64();
        println!("run {run}: write {write:.0} MiB/s, read {read:.0} MiB/s");
        writes.push(write);
        reads.push(read);
        tokio::time::sleep(std::time::Duration::from_secs_f64(pause)).await;
        let args = REMOVE3args { object: diropargs3 { dir: fh.clone(), name: name.as_bytes().into() } };
        conn.remove(&args).await.expect("remove call").unwrap();
    }
    println!("median of {runs}: write {:.0} MiB/s, read {:.0} MiB/s", median(&mut writes), median(&mut reads));
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
