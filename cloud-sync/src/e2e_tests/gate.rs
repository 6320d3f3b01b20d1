//! What the cloud refuses before it reads a body: oversize declarations,
//! unsigned or unknown senders of sync batches, operator requests without a
//! valid token. Each request below declares a body and never sends it: the
//! answer arrives all the same, so the body was never waited for.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::testkit::{Cloud, serve};

/// Sends `head` (a request head with a `content-length`, no body) and
/// returns what comes back before the cloud closes the connection.
async fn head_only(addr: std::net::SocketAddr, head: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
        if String::from_utf8_lossy(&got).contains("\"status\"") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn refusals_come_before_the_body_is_read() {
    let cloud = Cloud::primary("eu-west", &["h1"]);
    let at = serve(cloud.state.clone(), None).await;
    let batch = |extra: &str, length: usize| {
        format!(
            "POST /sync/v1/batches HTTP/1.1\r\nhost: cloud\r\ncontent-type: application/json\r\n\
             {extra}content-length: {length}\r\n\r\n"
        )
    };
    let too_big = head_only(at.addr, &batch("", 64 << 20)).await;
    assert!(too_big.starts_with("HTTP/1.1 413 "), "{too_big}");
    let unsigned = head_only(at.addr, &batch("", 1 << 20)).await;
    assert!(unsigned.starts_with("HTTP/1.1 401 "), "{unsigned}");
    assert!(unsigned.contains("unsigned"), "{unsigned}");
    let now = hms_domain::Timestamp::now().as_millis();
    let stranger = format!(
        "x-hms-hospital: h9\r\nx-hms-node: edge-9\r\nx-hms-timestamp: {now}\r\n\
         x-hms-signature: AAAA\r\n"
    );
    let unknown = head_only(at.addr, &batch(&stranger, 1 << 20)).await;
    assert!(
        unknown.starts_with("HTTP/1.1 401 ") || unknown.starts_with("HTTP/1.1 403 "),
        "{unknown}"
    );
    assert!(unknown.contains("h9"), "{unknown}");
    let operator = |token: &str| {
        format!(
            "POST /api/v1/empi/search HTTP/1.1\r\nhost: cloud\r\ncontent-type: application/json\r\n\
             authorization: Bearer {token}\r\ncontent-length: 1000000\r\n\r\n"
        )
    };
    let denied = head_only(at.addr, &operator("hmsc_not-a-token")).await;
    assert!(denied.starts_with("HTTP/1.1 401 "), "{denied}");
    // A valid token passes the gate: the handler reads the body and answers.
    let token = cloud.token("ops");
    let body = "{}";
    let head = operator(&token).replace(
        "content-length: 1000000",
        &format!("content-length: {}", body.len()),
    );
    let answered = head_only(at.addr, &format!("{head}{body}")).await;
    assert!(answered.starts_with("HTTP/1.1 "), "{answered}");
    assert!(!answered.starts_with("HTTP/1.1 401 "), "{answered}");
}
