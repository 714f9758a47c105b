//! Email channel benchmark: mails per second taken from an IMAP mailbox
//! (fetched, parsed by the plugin, threaded, stored with their files and
//! original, flagged `\Seen`, and answered by the assistant), and the time
//! from a mail landing in the mailbox to the assistant's reply accepted by
//! the SMTP server.
//!
//! ```text
//! export TEST_IMAP_URL=$(scripts/test-mail.sh start)    # Dovecot on :1143
//! cargo bench --bench email                              # SQLite
//! cargo bench --bench email -- --rounds 4 --replies 200
//! cargo bench --bench email -- --synchronous normal     # SQLite without an fsync per commit
//! ```
//!
//! Processes: Dovecot, the gateway (`builtin:email`, `kb-answer`
//! answering) and this binary, which delivers mail with IMAP `APPEND` and
//! runs a minimal SMTP server that records when each reply arrives.
//! Throughput: `--rounds` copies of a 50-mail mailbox of mixed shapes
//! (plain, quoted replies, HTML only, multipart/alternative, Latin-1
//! quoted-printable, base64, attachments, an inline image), each mail from
//! its own customer, delivered while the listener is stopped; the clock
//! runs from `listener/start` to the last mail flagged `\Seen`. Replies:
//! one mail at a time, the listener in IDLE.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, spawn_and_wait};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

struct Args {
    rounds: usize,
    replies: usize,
    /// SQLite's `database.synchronous` (`full`, the default, or `normal`).
    synchronous: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        rounds: 4,
        replies: 100,
        synchronous: "full".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |default: usize| it.next().and_then(|v| v.parse().ok()).unwrap_or(default);
        match arg.as_str() {
            "--rounds" => a.rounds = num(4),
            "--replies" => a.replies = num(100),
            "--synchronous" => a.synchronous = it.next().unwrap_or_else(|| "full".into()),
            _ => {}
        }
    }
    a
}

/// When the SMTP sink received a mail for each recipient.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// A minimal SMTP server: accepts every mail and records its recipients.
async fn smtp_sink() -> (u16, Arrivals) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let arrivals: Arrivals = Arc::default();
    let a = arrivals.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let a = a.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read);
                let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                let mut rcpts = Vec::new();
                let mut line = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250-sink\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("MAIL") {
                        rcpts.clear();
                        b"250 OK\r\n"
                    } else if upper.starts_with("RCPT") {
                        let to = line.split(['<', '>']).nth(1).unwrap_or_default().to_owned();
                        rcpts.push(to);
                        b"250 OK\r\n"
                    } else if upper.starts_with("DATA") {
                        let _ = write.write_all(b"354 go on\r\n").await;
                        loop {
                            line.clear();
                            if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == ".\r\n" {
                                break;
                            }
                        }
                        let now = Instant::now();
                        let mut a = a.lock().expect("lock");
                        for r in rcpts.drain(..) {
                            a.insert(r, now);
                        }
                        b"250 queued\r\n"
                    } else if upper.starts_with("QUIT") {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 OK\r\n"
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, arrivals)
}

fn gateway(
    dir: &std::path::Path,
    imap: &str,
    mailbox: &str,
    smtp_port: u16,
    synchronous: &str,
) -> Server {
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"[storage]
data_dir = {data:?}

[database]
synchronous = "{synchronous}"

[[plugins]]
id = "kb-answer"
path = "builtin:kb-answer"
world = "llm-provider"

[[plugins]]
id = "email"
path = "builtin:email"
world = "channel"
[plugins.mail]
address = "{mailbox}"
smtp_url = "smtp://127.0.0.1:{smtp_port}"
imap_url = "imap://{user}:secret@{imap}/INBOX"
start_listener = false
[plugins.grants]
mail = true
max_concurrent = 16
"#,
            data = dir.join("data").display().to_string(),
            user = mailbox.replace('@', "%40"),
        ),
    )
    .expect("config");
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(&config)
        .args(["--bind", "127.0.0.1:0"])
        .env("GATEWAY_RATE_LIMITS", "off")
        .env(
            "GATEWAY_JWT_SECRET",
            "bench-secret-0123456789abcdef0123456789",
        )
        .env_remove("DATABASE_URL");
    spawn_and_wait(cmd, true)
}

/// A 1x1 PNG, base64.
const PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGMAAQAABQABDQottAAAAABJRU5ErkJggg==";

/// Mail `i` of the mixed mailbox, from customer `who`.
fn shaped(i: usize, who: &str, to: &str, id: &str) -> String {
    let head = format!(
        "From: Customer {i} <{who}>\r\nTo: {to}\r\nMessage-ID: <{id}>\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    );
    match i % 7 {
        0 => format!(
            "{head}Subject: Order question {i}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, where is my order {i}? It was due on Monday.\r\n\r\nThanks,\r\nAnna\r\n"
        ),
        1 => format!(
            "{head}Subject: Re: Your order {i}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThat helps, thank you. One more question about the invoice.\r\n\r\nOn Wed, 2 Dec 2026 at 09:00, Support <{to}> wrote:\r\n> Your order has shipped.\r\n> Tracking: ZX{i}\r\n>\r\n> Regards\r\n"
        ),
        2 => format!(
            "{head}Subject: HTML only {i}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Can I <b>change</b> my delivery address for order {i}?</p><div class=\"gmail_quote\"><blockquote>Earlier text</blockquote></div></body></html>\r\n"
        ),
        3 => format!(
            "{head}Subject: Alternative {i}\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHow do I reset my password?\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>How do I reset my password?</p>\r\n--alt--\r\n"
        ),
        4 => format!(
            "{head}Subject: =?ISO-8859-1?Q?R=E9clamation_{i}?=\r\nContent-Type: text/plain; charset=ISO-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nBonjour, ma commande est arriv=E9e ab=EEm=E9e. Que faire ?\r\n"
        ),
        5 => format!(
            "{head}Subject: Base64 {i}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nV2hhdCBhcmUgeW91ciBvcGVuaW5nIGhvdXJzIG9uIFN1bmRheT8=\r\n"
        ),
        _ => format!(
            "{head}Subject: Files {i}\r\nContent-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n--mix\r\nContent-Type: multipart/related; boundary=\"rel\"\r\n\r\n--rel\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>The damage: <img src=\"cid:p{i}@c\"></p>\r\n--rel\r\nContent-Type: image/png\r\nContent-ID: <p{i}@c>\r\nContent-Transfer-Encoding: base64\r\n\r\n{PNG}\r\n--rel--\r\n--mix\r\nContent-Type: text/plain; name=\"receipt.txt\"\r\nContent-Disposition: attachment; filename=\"receipt.txt\"\r\n\r\nOrder {i}: 2 items, 40 EUR\r\n--mix--\r\n"
        ),
    }
}

type Imap = async_imap::Session<tokio::net::TcpStream>;

async fn imap_login(addr: &str, user: &str) -> Imap {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to IMAP (scripts/test-mail.sh start)");
    let mut client = async_imap::Client::new(tcp);
    client.read_response().await.expect("greeting");
    client
        .login(user, "secret")
        .await
        .map_err(|(e, _)| e)
        .expect("login")
}

async fn seen_count(s: &mut Imap) -> usize {
    s.select("INBOX").await.expect("select");
    s.search("SEEN").await.expect("search").len()
}

async fn post(addr: &str, path: &str, key: &str) -> u16 {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {key}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    write.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    let _ = tokio::io::AsyncReadExt::read_to_string(&mut read, &mut out).await;
    out.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args = parse_args();
    let imap_url =
        std::env::var("TEST_IMAP_URL").unwrap_or_else(|_| "imap://127.0.0.1:1143".into());
    let imap_addr = imap_url
        .trim_start_matches("imap://")
        .trim_end_matches('/')
        .to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (smtp_port, arrivals) = smtp_sink().await;
        let mailbox = format!("bench-{}@example.test", std::process::id());
        let dir = tempfile::tempdir().expect("tempdir");
        let server = gateway(
            dir.path(),
            &imap_addr,
            &mailbox,
            smtp_port,
            &args.synchronous,
        );
        let key = {
            let out = Command::new(BIN)
                .args(["apikey", "create", "--name", "bench", "--config"])
                .arg(dir.path().join("gateway.toml"))
                .env_remove("DATABASE_URL")
                .output()
                .expect("apikey create");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };

        // Throughput: the mixed mailbox, delivered while the listener is
        // stopped.
        let total = args.rounds * 50;
        let mut s = imap_login(&imap_addr, &mailbox).await;
        for n in 0..total {
            let who = format!("c{n}@customers.test");
            let raw = shaped(n % 50, &who, &mailbox, &format!("m{n}@customers.test"));
            s.append("INBOX", None, None, raw.as_bytes())
                .await
                .expect("append");
        }
        let started = Instant::now();
        assert_eq!(
            post(&server.addr, "/api/channels/email/listener/start", &key).await,
            200,
            "listener/start"
        );
        loop {
            if seen_count(&mut s).await >= total {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(600), "timed out");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = started.elapsed();
        let answered = {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let n = arrivals.lock().expect("lock").len();
                if n >= total || Instant::now() > deadline {
                    break n;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        println!(
            "mailbox: {total} mails ({} rounds of 50 mixed) taken in {:.2} s: {:.0} mails/s stored and flagged \\Seen; {answered} answers reached SMTP",
            args.rounds,
            took.as_secs_f64(),
            total as f64 / took.as_secs_f64()
        );

        // Mail to reply, one at a time, the listener in IDLE.
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        for n in 0..args.replies {
            let who = format!("r{n}@customers.test");
            let raw = shaped(0, &who, &mailbox, &format!("r{n}@customers.test"));
            let t0 = Instant::now();
            s.append("INBOX", None, None, raw.as_bytes())
                .await
                .expect("append");
            loop {
                if let Some(at) = arrivals.lock().expect("lock").get(&who) {
                    h.record(at.duration_since(t0).as_micros().max(1) as u64)
                        .expect("record");
                    break;
                }
                assert!(t0.elapsed() < Duration::from_secs(30), "no reply to {who}");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        println!(
            "mail to reply ({} mails, IDLE): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            args.replies,
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        );
        let _ = s.logout().await;
        drop(server);
    });
}
