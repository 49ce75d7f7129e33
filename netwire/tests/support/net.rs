//! Loopback socket pairs (never any other address).

use tokio::net::{TcpListener, TcpStream};

/// A connected pair on 127.0.0.1: (client end, accepted server end).
pub async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.expect("connect"), accepted.expect("accept").0)
}
