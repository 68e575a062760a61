//! A TLS handshake on a master's port ([`crate::master::port`] runs it,
//! within its caps and timeout). A client that speaks plain HTTP to a TLS
//! port gets a 400 that says so instead of a broken handshake it cannot
//! read.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// What a plaintext HTTP client is told, as an API error.
fn plaintext_answer() -> String {
    let body = r#"{"error":{"code":"tls_required","message":"this port speaks TLS: use https:// or wss:// and the master's CA"}}"#;
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The handshake, or `None` when the client spoke plain HTTP (and was
/// answered).
pub(crate) async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    mut tcp: TcpStream,
) -> std::io::Result<Option<TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    // A TLS client opens with a handshake record (0x16); an HTTP one with
    // a method name.
    if tcp.peek(&mut first).await? == 1 && first[0].is_ascii_uppercase() {
        tcp.write_all(plaintext_answer().as_bytes()).await?;
        let _ = tcp.shutdown().await;
        return Ok(None);
    }
    acceptor.accept(tcp).await.map(Some)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_plaintext_answer_says_its_length() {
        let text = super::plaintext_answer();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
