//! The email channel end to end: the real binary with `builtin:email`
//! against a real IMAP server (Dovecot, started by
//! `scripts/test-mail.sh`, named by `TEST_IMAP_URL`) and a real SMTP
//! server per test (Python's aiosmtpd, writing what it receives to a
//! Maildir the test reads). Mail is delivered into the mailbox with IMAP
//! `APPEND`; the listener takes it with IDLE.
//!
//! Without `TEST_IMAP_URL` or aiosmtpd the tests say so and pass (like the
//! PostgreSQL tests without `TEST_DATABASE_URL`); `.ci/run` has both.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::common::{
    DbKind, Gateway, Options, admin_token, databases, eventually, messages_of, session_with,
};

/// An SMTP server that keeps what it receives (aiosmtpd's Maildir handler).
struct Smtp {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

impl Smtp {
    fn start() -> Smtp {
        let mut s = Smtp {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        s.up();
        s
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("Maildir")
    }

    fn up(&mut self) {
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(self.maildir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        self.child = Some(child);
        for _ in 0..100 {
            if listening(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("aiosmtpd did not listen on {}", self.port);
    }

    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every mail received so far, as text.
    fn received(&self) -> Vec<String> {
        let mut mails = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir().join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                if let Ok(bytes) = std::fs::read(e.path()) {
                    mails.push(String::from_utf8_lossy(&bytes).replace("\r\n", "\n"));
                }
            }
        }
        mails
    }

    fn received_for(&self, rcpt: &str) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|m| header(m, "X-RcptTo").is_some_and(|v| v.contains(rcpt)))
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.down();
    }
}

/// A header's value (unfolded), from a mail's text.
fn header(mail: &str, name: &str) -> Option<String> {
    let head = mail.split("\n\n").next().unwrap_or_default();
    let mut value: Option<String> = None;
    for line in head.lines() {
        if let Some(v) = value.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            return value;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case(name)
        {
            value = Some(v.trim().to_owned());
        }
    }
    value
}

/// The IMAP server of the tests, when there is one (and aiosmtpd).
fn imap() -> Option<String> {
    let url = std::env::var("TEST_IMAP_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let smtpd = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    match url {
        Some(url) if smtpd => Some(url),
        _ => {
            eprintln!(
                "note: email tests skipped: set TEST_IMAP_URL (scripts/test-mail.sh start) and install aiosmtpd (see tests/README.md)"
            );
            None
        }
    }
}

/// A mailbox of its own for each use: any user logs in to the test server.
fn new_mailbox() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "support-{}-{}@example.test",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn host_port(imap_url: &str) -> String {
    imap_url
        .trim_start_matches("imap://")
        .trim_end_matches('/')
        .to_owned()
}

/// Delivers `raw` into `user`'s INBOX.
async fn append(imap_url: &str, user: &str, raw: &str) {
    let tcp = tokio::net::TcpStream::connect(host_port(imap_url))
        .await
        .expect("connect to IMAP");
    let mut client = async_imap::Client::new(tcp);
    client.read_response().await.expect("greeting");
    let mut s = client
        .login(user, "secret")
        .await
        .map_err(|(e, _)| e)
        .expect("login");
    s.append("INBOX", None, None, raw.replace('\n', "\r\n"))
        .await
        .expect("append");
    let _ = s.logout().await;
}

/// How many of `user`'s mails are flagged `\Seen`, and how many there are.
async fn seen(imap_url: &str, user: &str) -> (usize, usize) {
    let tcp = tokio::net::TcpStream::connect(host_port(imap_url))
        .await
        .expect("connect to IMAP");
    let mut client = async_imap::Client::new(tcp);
    client.read_response().await.expect("greeting");
    let mut s = client
        .login(user, "secret")
        .await
        .map_err(|(e, _)| e)
        .expect("login");
    let mailbox = s.examine("INBOX").await.expect("examine");
    let seen = s.search("SEEN").await.expect("search").len();
    let _ = s.logout().await;
    (seen, mailbox.exists as usize)
}

fn options(kind: DbKind, imap_url: &str, mailbox: &str, smtp_port: u16) -> Options {
    let user = mailbox.replace('@', "%40");
    Options::new(kind)
        .env("GATEWAY_RATE_LIMITS", "off")
        .toml(&format!(
            r#"
[[plugins]]
id = "kb-answer"
path = "builtin:kb-answer"
world = "llm-provider"

[[plugins]]
id = "email"
path = "builtin:email"
world = "channel"
organization = "default"
[plugins.mail]
address = "{mailbox}"
smtp_url = "smtp://127.0.0.1:{smtp_port}"
imap_url = "imap://{user}:secret@{host}/INBOX"
[plugins.grants]
mail = true
"#,
            host = host_port(imap_url),
        ))
}

fn mail(from: &str, to: &str, id: &str, subject: &str, extra: &str, body: &str) -> String {
    format!(
        "From: Tomasz Nowak <{from}>\nTo: {to}\nSubject: {subject}\nMessage-ID: <{id}>\nDate: Thu, 03 Dec 2026 10:00:00 +0000\nMIME-Version: 1.0\n{extra}Content-Type: text/plain; charset=utf-8\n\n{body}\n"
    )
}

/// Question `i` of the restart test, a mail of its own.
fn question(from: &str, to: &str, i: usize) -> String {
    mail(
        from,
        to,
        &format!("r{i}@customer.test"),
        &format!("Question {i}"),
        "",
        &format!("Question number {i}"),
    )
}

/// The customer's messages of the session `session`.
async fn customer_texts(gw: &Gateway, token: &str, session: &str) -> Vec<String> {
    messages_of(gw, token, session)
        .await
        .into_iter()
        .filter(|m| m["senderType"] == "customer")
        .filter_map(|m| m["content"].as_str().map(str::to_owned))
        .collect()
}

/// The delivery state of the message the provider knows as `id`.
async fn delivery_of(gw: &Gateway, provider_id: &str) -> Option<String> {
    let sql = "SELECT delivery FROM messages WHERE provider_message_id = $1";
    match gw.db.kind {
        DbKind::Sqlite => sqlx::query_scalar(sql)
            .bind(provider_id)
            .fetch_optional(&crate::common::sqlite(gw).await)
            .await
            .expect("query")
            .flatten(),
        DbKind::Postgres => {
            let url = gw.db.url.clone().expect("a PostgreSQL URL");
            let pool = sqlx::PgPool::connect(&url).await.expect("connect");
            sqlx::query_scalar(sql)
                .bind(provider_id)
                .fetch_optional(&pool)
                .await
                .expect("query")
                .flatten()
        }
    }
}

async fn wait_mails(smtp: &Smtp, rcpt: &str, n: usize) -> Vec<String> {
    eventually(&format!("{n} mail(s) to {rcpt}"), async || {
        let got = smtp.received_for(rcpt);
        (got.len() >= n).then_some(got)
    })
    .await
}

fn message_id(mail: &str) -> String {
    header(mail, "Message-ID")
        .expect("a Message-ID")
        .trim_matches(['<', '>'])
        .to_owned()
}

#[tokio::test]
async fn a_conversation_by_mail_threads_answers_and_records_automatic_mail() {
    let Some(imap_url) = imap() else { return };
    for kind in databases() {
        let smtp = Smtp::start();
        let mailbox = new_mailbox();
        let gw = Gateway::start_with(options(kind, &imap_url, &mailbox, smtp.port)).await;
        let admin = admin_token(&gw).await;
        let customer = format!("tomasz-{}@customer.test", std::process::id());

        // A new request: a conversation, the assistant's answer by mail.
        append(
            &imap_url,
            &mailbox,
            &mail(
                &customer,
                &mailbox,
                "first@customer.test",
                "Where is my order?",
                "",
                "Hello, where is my order 12345?\n\nThanks,\nTomasz",
            ),
        )
        .await;
        let session = eventually("the new request", async || {
            session_with(
                &gw,
                &admin,
                "Hello, where is my order 12345?\n\nThanks,\nTomasz",
            )
            .await
        })
        .await;
        let answer = wait_mails(&smtp, &customer, 1).await.remove(0);
        assert_eq!(
            header(&answer, "In-Reply-To").as_deref(),
            Some("<first@customer.test>"),
            "{answer}"
        );
        assert!(
            header(&answer, "References").is_some_and(|r| r.contains("<first@customer.test>")),
            "{answer}"
        );
        assert_eq!(
            header(&answer, "Subject").as_deref(),
            Some("Re: Where is my order?")
        );
        assert_eq!(
            header(&answer, "Auto-Submitted").as_deref(),
            Some("auto-replied")
        );
        let reply_to = header(&answer, "Reply-To").expect("Reply-To");
        let local = mailbox.split('@').next().expect("local part");
        assert!(reply_to.contains(&format!("{local}+")), "{reply_to}");
        assert!(
            header(&answer, "Content-Type").is_some_and(|t| t.contains("multipart/")),
            "{answer}"
        );
        let ours = message_id(&answer);
        assert_eq!(delivery_of(&gw, &ours).await.as_deref(), Some("sent"));

        // A Gmail-style reply to it: only the new text is stored.
        append(
            &imap_url,
            &mailbox,
            &mail(
                &customer,
                &mailbox,
                "second@customer.test",
                "Re: Where is my order?",
                &format!("In-Reply-To: <{ours}>\nReferences: <first@customer.test> <{ours}>\n"),
                "It is order 12345, placed Monday.\n\nOn Thu, 3 Dec 2026 at 10:01, Support <support@example.test> wrote:\n> Thanks for writing.\n> We will look.\n",
            ),
        )
        .await;
        eventually("the quoted reply, threaded", async || {
            customer_texts(&gw, &admin, &session)
                .await
                .contains(&"It is order 12345, placed Monday.".to_owned())
                .then_some(())
        })
        .await;

        // A reply by the plus tag alone, HTML only.
        let tag = reply_to
            .trim_matches(['<', '>'])
            .split('+')
            .nth(1)
            .and_then(|r| r.split('@').next())
            .expect("the tag")
            .to_owned();
        let html_only = format!(
            "From: {customer}\nTo: {local}+{tag}@example.test\nSubject: one more thing\nMessage-ID: <third@customer.test>\nMIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n<p>Also: <b>gift wrap</b> please.</p>\n"
        );
        append(&imap_url, &mailbox, &html_only).await;
        eventually("the HTML-only reply, threaded by its tag", async || {
            customer_texts(&gw, &admin, &session)
                .await
                .iter()
                .any(|t| t.contains("gift wrap"))
                .then_some(())
        })
        .await;

        // Attachments and an inline image.
        let png = base64::engine::general_purpose::STANDARD.encode(crate::common::PNG);
        let with_files = format!(
            "From: {customer}\nTo: {mailbox}\nSubject: Re: Where is my order?\nMessage-ID: <fourth@customer.test>\nIn-Reply-To: <{ours}>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"outer\"\n\n--outer\nContent-Type: multipart/related; boundary=\"inner\"\n\n--inner\nContent-Type: text/html; charset=utf-8\n\n<p>Receipt attached, photo: <img src=\"cid:photo1@customer.test\"></p>\n--inner\nContent-Type: image/png\nContent-ID: <photo1@customer.test>\nContent-Disposition: inline; filename=\"photo.png\"\nContent-Transfer-Encoding: base64\n\n{png}\n--inner--\n--outer\nContent-Type: text/plain; name=\"receipt.txt\"\nContent-Disposition: attachment; filename=\"receipt.txt\"\n\nOrder 12345: 2 items\n--outer--\n"
        );
        append(&imap_url, &mailbox, &with_files).await;
        let stored = eventually("the mail with files", async || {
            messages_of(&gw, &admin, &session)
                .await
                .into_iter()
                .find(|m| {
                    m["content"]
                        .as_str()
                        .is_some_and(|c| c.contains("Receipt attached"))
                })
        })
        .await;
        let names: Vec<String> = stored["attachments"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a["name"].as_str().map(str::to_owned))
            .collect();
        for name in ["photo.png", "receipt.txt", "original.eml"] {
            assert!(names.contains(&name.to_owned()), "{name} in {names:?}");
        }

        // An out-of-office answer: recorded, not stored as the customer's
        // message, not answered.
        let before = smtp.received_for(&customer).len();
        append(
            &imap_url,
            &mailbox,
            &mail(
                &customer,
                &mailbox,
                "ooo@customer.test",
                "Automatic reply: Where is my order?",
                &format!("Auto-Submitted: auto-replied\nIn-Reply-To: <{ours}>\n"),
                "I am away until Monday.",
            ),
        )
        .await;
        let note = eventually("the auto-reply's note", async || {
            messages_of(&gw, &admin, &session)
                .await
                .into_iter()
                .find(|m| {
                    m["isInternal"] == true
                        && m["content"]
                            .as_str()
                            .is_some_and(|c| c.contains("I am away"))
                })
        })
        .await;
        assert_eq!(note["senderType"], "system");
        assert!(
            !customer_texts(&gw, &admin, &session)
                .await
                .iter()
                .any(|t| t.contains("I am away"))
        );

        // An agent's reply goes out threaded, without Auto-Submitted.
        let r = gw
            .http
            .post(gw.url(&format!("/api/chat/sessions/{session}/messages")))
            .bearer_auth(&admin)
            .json(&json!({"content": "An agent here: it ships tomorrow."}))
            .send()
            .await
            .expect("agent reply");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        let mails = wait_mails(&smtp, &customer, before + 1).await;
        let agent_mail = mails
            .iter()
            .find(|m| m.contains("it ships tomorrow"))
            .expect("the agent's mail");
        assert_eq!(header(agent_mail, "Auto-Submitted"), None);
        assert_eq!(
            header(agent_mail, "In-Reply-To").as_deref(),
            Some("<fourth@customer.test>"),
            "the customer's latest mail"
        );
        let agent_id = message_id(agent_mail);

        // A bounce naming the agent's mail fails it; nothing answers it.
        let bounce = format!(
            "From: Mail Delivery System <MAILER-DAEMON@mx.customer.test>\nTo: {mailbox}\nSubject: Undelivered Mail Returned to Sender\nMessage-ID: <bounce1@mx.customer.test>\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\nThe mail could not be delivered.\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.customer.test\n\nFinal-Recipient: rfc822; {customer}\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 mailbox unknown\n--b\nContent-Type: text/rfc822-headers\n\nFrom: {mailbox}\nTo: {customer}\nMessage-ID: <{agent_id}>\nSubject: Re: Where is my order?\n--b--\n"
        );
        append(&imap_url, &mailbox, &bounce).await;
        eventually("the bounce to fail the agent's mail", async || {
            (delivery_of(&gw, &agent_id).await.as_deref() == Some("failed")).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            smtp.received_for(&customer).len(),
            before + 1,
            "automatic mail gets no answer"
        );

        // Every stored mail was flagged \Seen.
        eventually("every mail seen", async || {
            let (seen, all) = seen(&imap_url, &mailbox).await;
            (seen == all && all == 6).then_some(())
        })
        .await;

        // A ticket number in the subject threads the customer's mail, and
        // only the customer's.
        let r = gw
            .http
            .post(gw.url(&format!("/api/chat/sessions/{session}/ticket")))
            .bearer_auth(&admin)
            .json(&json!({"title": "Order 12345"}))
            .send()
            .await
            .expect("ticket");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        let ticket: Value = r.json().await.expect("json");
        let number = ticket["ticketId"].as_str().expect("ticketId").to_owned();
        for (from, id, text) in [
            (
                customer.as_str(),
                "t1@customer.test",
                "About the ticket: any news?",
            ),
            (
                "stranger@elsewhere.test",
                "t2@elsewhere.test",
                "I guessed a ticket number",
            ),
        ] {
            append(
                &imap_url,
                &mailbox,
                &mail(from, &mailbox, id, &format!("Order [#{number}]"), "", text),
            )
            .await;
        }
        eventually("the mail naming the ticket", async || {
            customer_texts(&gw, &admin, &session)
                .await
                .contains(&"About the ticket: any news?".to_owned())
                .then_some(())
        })
        .await;
        let other = eventually("the stranger's own conversation", async || {
            session_with(&gw, &admin, "I guessed a ticket number").await
        })
        .await;
        assert_ne!(other, session);

        // 003's send joins the conversation by its thread id.
        let r = gw
            .http
            .post(gw.url("/api/channels/email/send"))
            .bearer_auth(&admin)
            .json(&json!({
                "to": customer,
                "subject": "Your order has shipped",
                "text": "Tracking: ZX123.",
                "html": "<p>Tracking: <b>ZX123</b>.</p>",
                "threadId": tag,
            }))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        let sent: Value = r.json().await.expect("json");
        assert_eq!(sent["status"], "sent", "{sent}");
        let id = sent["messageId"].as_str().expect("messageId").to_owned();
        let mails = smtp.received_for(&customer);
        let shipped = mails
            .iter()
            .find(|m| header(m, "Message-ID").is_some_and(|v| v.contains(&id)))
            .expect("the sent mail");
        assert_eq!(
            header(shipped, "Subject").as_deref(),
            Some("Your order has shipped")
        );
        assert!(shipped.contains("ZX123"));
        assert!(
            messages_of(&gw, &admin, &session)
                .await
                .iter()
                .any(|m| m["content"] == "Tracking: ZX123.")
        );
        // A threadId naming nothing is a 404; a bad address a 400.
        let r = gw
            .http
            .post(gw.url("/api/channels/email/send"))
            .bearer_auth(&admin)
            .json(&json!({"to": customer, "text": "x", "threadId": "nosuchthread"}))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 404);
        let r = gw
            .http
            .post(gw.url("/api/channels/email/send"))
            .bearer_auth(&admin)
            .json(&json!({"to": "not an address", "text": "x"}))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 400);

        // 003's process runs the same pipeline: quoted text removed,
        // threaded by threadId, stored once for one messageId.
        let body = json!({
            "from": customer,
            "subject": "Re: Your order has shipped",
            "text": "Got it, thanks!\n\n> Tracking: ZX123.",
            "threadId": tag,
            "messageId": "process-1",
            "attachments": [],
        });
        let mut ids = Vec::new();
        for _ in 0..2 {
            let r = gw
                .http
                .post(gw.url("/api/channels/email/process"))
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await
                .expect("process");
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
            let v: Value = r.json().await.expect("json");
            assert_eq!(v["status"], "processed");
            ids.push(v["messageId"].clone());
        }
        assert_eq!(ids[0], ids[1], "a retry stores nothing new");
        let texts = customer_texts(&gw, &admin, &session).await;
        assert_eq!(
            texts.iter().filter(|t| *t == "Got it, thanks!").count(),
            1,
            "{texts:?}"
        );

        // The health names the email channel.
        let health: Value = gw
            .http
            .get(gw.url("/api/channels/health"))
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("json");
        assert_eq!(health["dependencies"]["email"], "healthy", "{health}");
    }
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_mailbox_loses_and_repeats_nothing() {
    let Some(imap_url) = imap() else { return };
    let kind = DbKind::Sqlite;
    let smtp = Smtp::start();
    let mailbox = new_mailbox();
    let opts = options(kind, &imap_url, &mailbox, smtp.port);
    let gw = Gateway::start_with(opts.clone()).await;
    let admin = admin_token(&gw).await;
    let customer = format!("restart-{}@customer.test", std::process::id());
    for i in 0..3 {
        append(&imap_url, &mailbox, &question(&customer, &mailbox, i)).await;
    }
    eventually("three mails stored", async || {
        (smtp.received_for(&customer).len() >= 3).then_some(())
    })
    .await;

    // The listener stopped: mail waits in the mailbox.
    let r = gw
        .http
        .post(gw.url("/api/channels/email/listener/stop"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("stop");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["status"], "stopped");
    append(&imap_url, &mailbox, &question(&customer, &mailbox, 3)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        seen(&imap_url, &mailbox).await,
        (3, 4),
        "the stopped listener took nothing"
    );

    // Killed while stopped, more mail meanwhile, started again: every
    // mail once.
    let (dir, db) = gw.crash();
    for i in 4..6 {
        append(&imap_url, &mailbox, &question(&customer, &mailbox, i)).await;
    }
    let gw = Gateway::restart(dir, db, &opts);
    let admin = gw.login("channel-admin", "correct horse battery").await;
    eventually("every mail seen", async || {
        (seen(&imap_url, &mailbox).await == (6, 6)).then_some(())
    })
    .await;
    let mut texts = Vec::new();
    for i in 0..6 {
        let session = eventually("the question's conversation", async || {
            session_with(&gw, &admin, &format!("Question number {i}")).await
        })
        .await;
        texts.extend(customer_texts(&gw, &admin, &session).await);
    }
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), 6, "{texts:?}");
    eventually("six answers", async || {
        (smtp.received_for(&customer).len() == 6).then_some(())
    })
    .await;
    // The listener can be started again through the API.
    let r = gw
        .http
        .post(gw.url("/api/channels/email/listener/start"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("start");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn replies_wait_while_smtp_is_down_and_go_out_once_it_is_up() {
    let Some(imap_url) = imap() else { return };
    let mut smtp = Smtp::start();
    smtp.down();
    let mailbox = new_mailbox();
    let gw = Gateway::start_with(options(DbKind::Sqlite, &imap_url, &mailbox, smtp.port)).await;
    let customer = format!("down-{}@customer.test", std::process::id());
    append(
        &imap_url,
        &mailbox,
        &mail(
            &customer,
            &mailbox,
            "down1@customer.test",
            "Hello",
            "",
            "Is anyone there?",
        ),
    )
    .await;
    // The answer is written and waits for the server.
    eventually("the pending answer", async || {
        let db = crate::common::sqlite(&gw).await;
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE delivery = 'pending' AND send_attempts >= 2",
        )
        .fetch_one(&db)
        .await
        .expect("query");
        (n >= 1).then_some(())
    })
    .await;
    smtp.up();
    let mails = wait_mails(&smtp, &customer, 1).await;
    assert_eq!(mails.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.received_for(&customer).len(), 1, "sent once");
}

#[tokio::test]
async fn without_an_entry_the_email_routes_answer_503() {
    let gw = Gateway::start(DbKind::Sqlite).await;
    let admin = admin_token(&gw).await;
    for path in [
        "/api/channels/email/send",
        "/api/channels/email/process",
        "/api/channels/email/listener/start",
        "/api/channels/email/listener/stop",
    ] {
        let r = gw
            .http
            .post(gw.url(path))
            .bearer_auth(&admin)
            .json(&json!({"to": "a@example.com", "from": "a@example.com", "text": "x"}))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 503, "{path}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "service_unavailable", "{body}");
    }
}
