//! A recording proxy between ciofs and an emulator: it passes every byte
//! on unchanged and keeps what the client sent, so a test can check what
//! ciofs asked for where the emulator keeps less than Cloud Storage would
//! (fake-gcs-server stores no bucket labels, location or storage class).
//! It can also hold the emulator's answers back for a while
//! (`hold_answers`): a call under way whose answer comes late.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ciofs_backends::sync::lock;

pub struct RecordingProxy {
    url: String,
    sent: Arc<Mutex<Vec<u8>>>,
    holding: Arc<AtomicBool>,
}

impl RecordingProxy {
    /// Listens on a free loopback port and forwards each connection to
    /// `upstream` (`http://HOST:PORT`).
    pub fn start(upstream: &str) -> Self {
        let target = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let holding = Arc::new(AtomicBool::new(false));
        let (recorded, held) = (sent.clone(), holding.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&target) else { continue };
                pump(client, server, recorded.clone(), held.clone());
            }
        });
        RecordingProxy { url, sent, holding }
    }

    /// While on, what the emulator answers is kept back (requests still
    /// go through); off lets it go on.
    pub fn hold_answers(&self, on: bool) {
        self.holding.store(on, Ordering::SeqCst);
    }

    /// What ciofs should use as `STORAGE_EMULATOR_HOST`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Everything clients sent so far (requests and bodies), as text.
    pub fn sent(&self) -> String {
        String::from_utf8_lossy(&lock(&self.sent)).into_owned()
    }
}

/// Copies both ways until either side closes; what the client sends is
/// also recorded.
fn pump(client: TcpStream, server: TcpStream, recorded: Arc<Mutex<Vec<u8>>>, holding: Arc<AtomicBool>) {
    let (Ok(mut from_client), Ok(mut to_client)) = (client.try_clone(), client.try_clone()) else { return };
    let (Ok(mut to_server), Ok(mut from_server)) = (server.try_clone(), server.try_clone()) else { return };
    std::thread::spawn(move || {
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from_client.read(&mut buffer) {
            lock(&recorded).extend_from_slice(&buffer[..n]);
            if to_server.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from_server.read(&mut buffer) {
            while holding.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if to_client.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to_client.shutdown(Shutdown::Write);
    });
}
