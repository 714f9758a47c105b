//! Files: 001 multipart messages, 000 base64 messages and file upload and
//! delete, authorized downloads with safe headers, the 5 MB / 10 files
//! limits (a huge body refused before it is read), magic-byte checks, and
//! files removed with what owned them.

use std::io::{Read as _, Write as _};

use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::chat::{call, cast};
use crate::common::{Gateway, databases};

/// A 3×2 PNG (header only: enough for type and size).
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0, 0,
    3, 0, 0, 0, 2, 8, 6, 0, 0, 0, 0, 0, 0, 0,
];
const PDF: &[u8] = b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n";

fn part(bytes: &[u8], name: &str, mime: &str) -> Part {
    Part::bytes(bytes.to_vec())
        .file_name(name.to_owned())
        .mime_str(mime)
        .expect("mime")
}

async fn send_form(gw: &Gateway, token: &str, path: &str, form: Form) -> (u16, Value) {
    let r = gw
        .http
        .post(gw.url(path))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn stored_files(gw: &Gateway) -> usize {
    let root = gw.dir.path().join("data").join("files");
    let Ok(dirs) = std::fs::read_dir(root) else {
        return 0;
    };
    dirs.flatten()
        .filter_map(|d| std::fs::read_dir(d.path()).ok())
        .flat_map(|f| f.flatten())
        .filter(|f| !f.file_name().to_string_lossy().starts_with('.'))
        .count()
}

#[tokio::test]
async fn files_travel_with_messages() {
    for kind in databases() {
        let gw = Gateway::start(kind).await;
        let c = cast(&gw).await;
        let (_, s) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/chat/sessions",
            Some(json!({})),
        )
        .await;
        let sid = s["id"].as_str().expect("id").to_owned();
        let mpath = format!("/api/chat/sessions/{sid}/messages");

        // 001: multipart with two files.
        let form = Form::new()
            .text("content", "Here is the photo and the invoice")
            .part("attachments[0]", part(PNG, "photo.png", "image/png"))
            .part(
                "attachments[1]",
                part(PDF, "../../etc/invoice.pdf", "application/pdf"),
            );
        let (status, m) = send_form(&gw, &c.alice, &mpath, form).await;
        assert_eq!(status, 200, "{kind:?} {m}");
        let files = m["attachments"].as_array().expect("attachments").clone();
        assert_eq!(files.len(), 2);
        assert_eq!(
            (
                files[0]["type"].as_str(),
                files[0]["name"].as_str(),
                files[0]["size"].as_u64()
            ),
            (Some("image/png"), Some("photo.png"), Some(PNG.len() as u64))
        );
        assert_eq!(files[0]["metadata"], json!({ "width": 3, "height": 2 }));
        assert_eq!(
            files[1]["fileName"], "invoice.pdf",
            "a client path is never kept"
        );
        assert_eq!(files[0]["url"], files[0]["fileUrl"]);

        // The history shows them too.
        let (_, page) = call(&gw, &c.agent, Method::GET, &mpath, None).await;
        assert_eq!(
            page["messages"][0]["attachments"].as_array().map(Vec::len),
            Some(2)
        );

        // Downloads: authorized, typed, nosniff, named.
        let url = files[0]["url"].as_str().expect("url");
        let r = gw
            .http
            .get(gw.url(url))
            .bearer_auth(&c.agent)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/png");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(
            r.headers()["content-disposition"]
                .to_str()
                .unwrap_or_default()
                .starts_with("inline; filename=\"photo.png\"")
        );
        assert_eq!(r.bytes().await.expect("bytes").as_ref(), PNG);
        for token in [&c.bob, &c.outsider] {
            let r = gw
                .http
                .get(gw.url(url))
                .bearer_auth(token)
                .send()
                .await
                .expect("get");
            assert_eq!(r.status(), 404);
        }

        // HTML is always a download.
        let form = Form::new().text("content", "page").part(
            "attachments[0]",
            part(
                b"<html><script>alert(1)</script></html>",
                "x.html",
                "text/html",
            ),
        );
        let (_, m) = send_form(&gw, &c.alice, &mpath, form).await;
        let r = gw
            .http
            .get(gw.url(m["attachments"][0]["url"].as_str().expect("url")))
            .bearer_auth(&c.alice)
            .send()
            .await
            .expect("get");
        assert!(
            r.headers()["content-disposition"]
                .to_str()
                .unwrap_or_default()
                .starts_with("attachment;"),
            "{:?}",
            r.headers()
        );

        // The declared type must match the bytes.
        let form = Form::new()
            .text("content", "x")
            .part("attachments[0]", part(PDF, "photo.png", "image/png"));
        let (status, e) = send_form(&gw, &c.alice, &mpath, form).await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (400, Some("validation_error")),
            "{e}"
        );

        // Eleven files: 400. Six megabytes: 413.
        let mut form = Form::new().text("content", "many");
        for i in 0..11 {
            form = form.part(
                format!("attachments[{i}]"),
                part(b"hello", &format!("{i}.txt"), "text/plain"),
            );
        }
        let (status, e) = send_form(&gw, &c.alice, &mpath, form).await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (400, Some("validation_error")),
            "{e}"
        );
        let big = vec![b'a'; 6 * 1024 * 1024];
        let form = Form::new()
            .text("content", "big")
            .part("attachments[0]", part(&big, "big.txt", "text/plain"));
        // The gateway answers before reading the rest and closes that
        // connection: a client of its own, so no pooled connection is hit.
        let r = reqwest::Client::new()
            .post(gw.url(&mpath))
            .bearer_auth(&c.alice)
            .multipart(form)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        let e: Value = r.json().await.expect("json");
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (413, Some("payload_too_large")),
            "{e}"
        );

        // 000: base64 in JSON, and a file on its own.
        use base64::Engine as _;
        let (status, m) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/chat/messages",
            Some(json!({ "sessionId": sid, "content": "as base64", "attachments": [{ "fileName": "p.png", "fileType": "image/png", "fileData": base64::engine::general_purpose::STANDARD.encode(PNG) }] })),
        )
        .await;
        assert_eq!(status, 200, "{m}");
        assert_eq!(
            (m["attachments"][0]["fileType"].as_str(), m["role"].as_str()),
            (Some("image/png"), Some("user"))
        );
        let (status, e) = call(&gw, &c.alice, Method::POST, "/api/chat/messages", Some(json!({ "sessionId": sid, "content": "x", "attachments": [{ "fileName": "p.png", "fileType": "image/png", "fileData": "***" }] }))).await;
        assert_eq!(status, 400, "{e}");

        let before = stored_files(&gw);
        let form = Form::new()
            .text("sessionId", sid.clone())
            .part("file", part(b"unique notes 42", "notes.txt", "text/plain"));
        let (status, f) = send_form(&gw, &c.alice, "/api/chat/files", form).await;
        assert_eq!(status, 200, "{f}");
        assert_eq!(
            (f["fileName"].as_str(), f["fileType"].as_str()),
            (Some("notes.txt"), Some("text/plain"))
        );
        assert!(
            f["fileUrl"]
                .as_str()
                .is_some_and(|u| u.starts_with("/api/chat/attachments/"))
        );
        assert_eq!(stored_files(&gw), before + 1);
        let fid = f["id"].as_str().expect("id");
        let (status, _) = call(
            &gw,
            &c.bob,
            Method::DELETE,
            &format!("/api/chat/files/{fid}"),
            None,
        )
        .await;
        assert_eq!(status, 404);
        let (status, done) = call(
            &gw,
            &c.alice,
            Method::DELETE,
            &format!("/api/chat/files/{fid}"),
            None,
        )
        .await;
        assert_eq!((status, done), (200, json!({ "success": true })));
        assert_eq!(stored_files(&gw), before, "the bytes went with the file");
        let r = gw
            .http
            .get(gw.url(f["fileUrl"].as_str().expect("url")))
            .bearer_auth(&c.alice)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 404);

        // Deleting the session removes its files.
        assert!(stored_files(&gw) > 0);
        let (status, _) = call(
            &gw,
            &c.alice,
            Method::DELETE,
            &format!("/api/chat/sessions/{sid}"),
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(stored_files(&gw), 0);
    }
}

#[tokio::test]
async fn a_huge_upload_is_refused_before_it_is_read() {
    let gw = Gateway::start(databases()[0]).await;
    let token = gw.register_and_login("uploader").await;
    let (_, s) = call(
        &gw,
        &token,
        Method::POST,
        "/api/chat/sessions",
        Some(json!({})),
    )
    .await;
    let path = format!(
        "/api/chat/sessions/{}/messages",
        s["id"].as_str().expect("id")
    );
    let addr = gw.base.trim_start_matches("http://").to_owned();
    // Over the total limit (ten 5 MB files): refused on its headers.
    let answer = raw_upload(&addr, &path, &token, 60 * 1024 * 1024, 0).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    // 50 MB announced, one file streaming: refused once it passes 5 MB,
    // long before the rest would arrive.
    let answer = raw_upload(&addr, &path, &token, 50 * 1024 * 1024, 6 * 1024 * 1024).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("larger than 5 MB"), "{answer}");
}

/// Announces `length` bytes of multipart body, sends the start of a file
/// part and `send` bytes of it, and returns the start of the answer.
async fn raw_upload(addr: &str, path: &str, token: &str, length: usize, send: usize) -> String {
    let (addr, path, token) = (addr.to_owned(), path.to_owned(), token.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {length}\r\n\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"attachments[0]\"; filename=\"big.bin\"\r\nContent-Type: text/plain\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).expect("head");
        let mut writer = stream.try_clone().expect("clone");
        let feeder = std::thread::spawn(move || {
            let chunk = [b'a'; 64 * 1024];
            let mut sent = 0;
            while sent < send {
                // The server may stop reading and close: that is the point.
                if writer.write_all(&chunk).is_err() {
                    break;
                }
                sent += chunk.len();
            }
        });
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).expect("an answer before the whole body");
        let _ = feeder.join();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn a_retried_upload_records_the_files_once() {
    let gw = Gateway::start(databases()[0]).await;
    let token = gw.register_and_login("retry-files").await;
    let (_, s) = call(
        &gw,
        &token,
        Method::POST,
        "/api/chat/sessions",
        Some(json!({})),
    )
    .await;
    let path = format!(
        "/api/chat/sessions/{}/messages",
        s["id"].as_str().expect("id")
    );
    let mut ids = Vec::new();
    for _ in 0..2 {
        let form = Form::new()
            .text("content", "with a file")
            .part("attachments[0]", part(PNG, "p.png", "image/png"));
        let r = gw
            .http
            .post(gw.url(&path))
            .bearer_auth(&token)
            .header("Idempotency-Key", "upload-1")
            .multipart(form)
            .send()
            .await
            .expect("send");
        let m: Value = r.json().await.expect("json");
        ids.push((m["id"].clone(), m["attachments"][0]["id"].clone()));
    }
    assert_eq!(ids[0], ids[1]);
    let (_, page) = call(&gw, &token, Method::GET, &path, None).await;
    // One message, and the assistant's handover notice (it knows nothing).
    assert_eq!(page["totalCount"], 2, "{page}");
    assert_eq!(page["messages"][1]["senderType"], "system");
    assert_eq!(
        page["messages"][0]["attachments"].as_array().map(Vec::len),
        Some(1)
    );
}
