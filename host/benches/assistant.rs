//! Assistant benchmark: knowledge-search latency at 1,000 and 100,000
//! passages, indexing throughput, and end-to-end `POST /api/core/messages`
//! latency with `kb-answer` under concurrent clients.
//!
//! ```text
//! cargo bench --bench assistant
//! cargo bench --bench assistant -- --sizes 1000,100000 --queries 2000 --connections 32 --seconds 10
//! cargo bench --bench assistant -- --skip-search          # the end-to-end run alone
//! ```
//!
//! Search runs in this process against `gateway::search::Corpus` (the same
//! code the gateway runs), one organization holding every passage, with
//! `kb-answer`'s embeddings computed natively. Passages are synthetic:
//! sentences drawn from `eval/kb` plus rare words from a made-up
//! vocabulary, so that the index has a realistic spread of common and rare
//! terms. Queries are the evaluation's 130 questions; each search asks for
//! the 20 candidates the answer pipeline asks for.
//!
//! The end-to-end run starts the gateway (rate limits off), imports
//! `eval/` with the CLI, and runs closed-loop clients that each post one
//! evaluation question per request (a new session each time).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Target, http_json, load_each, spawn_and_wait};
use gateway::search::{Corpus, Entry};
use hdrhistogram::Histogram;
use hyper::body::Bytes;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

struct Args {
    skip_search: bool,
    sizes: Vec<usize>,
    queries: usize,
    connections: usize,
    seconds: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        skip_search: false,
        sizes: vec![1_000, 100_000],
        queries: 2_000,
        connections: 32,
        seconds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--sizes" => {
                a.sizes = it
                    .next()
                    .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
                    .unwrap_or(a.sizes)
            }
            "--queries" => a.queries = it.next().and_then(|v| v.parse().ok()).unwrap_or(2_000),
            "--connections" => a.connections = it.next().and_then(|v| v.parse().ok()).unwrap_or(32),
            "--skip-search" => a.skip_search = true,
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(10),
            _ => {}
        }
    }
    a
}

fn eval_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../eval")
}

/// The evaluation's questions, answerable and not.
fn questions() -> Vec<String> {
    let text = std::fs::read_to_string(eval_dir().join("questions.toml")).expect("questions");
    let doc: toml::Value = toml::from_str(&text).expect("toml");
    ["answerable", "unanswerable"]
        .iter()
        .flat_map(|k| doc[k].as_array().cloned().unwrap_or_default())
        .filter_map(|q| q["question"].as_str().map(str::to_owned))
        .collect()
}

/// Sentences and titles of the evaluation articles.
fn material() -> (Vec<String>, Vec<String>) {
    let mut sentences = Vec::new();
    let mut titles = Vec::new();
    for entry in std::fs::read_dir(eval_dir().join("kb")).expect("kb") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        titles.push(
            text.lines()
                .next()
                .unwrap_or("")
                .trim_start_matches('#')
                .trim()
                .to_owned(),
        );
        for s in text.split(['.', '\n']) {
            let s = s.trim().trim_start_matches(['#', '-', ' ']);
            if s.split_whitespace().count() >= 5 {
                sentences.push(format!("{s}."));
            }
        }
    }
    (sentences, titles)
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn rare_word(rng: &mut Rng) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    // 50,000 distinct words: the index holds many rare terms.
    let mut n = rng.below(50_000);
    let mut w = String::new();
    for _ in 0..5 {
        w.push(LETTERS[n % 26] as char);
        n /= 26;
    }
    w.push_str("ex");
    w
}

fn passages(count: usize) -> Vec<(Entry, Option<Vec<f32>>)> {
    let (sentences, titles) = material();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..count)
        .map(|i| {
            let mut content = String::new();
            for _ in 0..5 {
                content.push_str(&sentences[rng.below(sentences.len())]);
                content.push(' ');
            }
            for _ in 0..8 {
                content.push_str(&rare_word(&mut rng));
                content.push(' ');
            }
            let title = format!("{} {}", titles[rng.below(titles.len())], i % 97);
            let vector = kb_answer::embed(&format!("{title}\n{content}"));
            (
                Entry {
                    id: i as i64 + 1,
                    org_id: 1,
                    document_id: i as i64 / 4 + 1,
                    title,
                    content,
                    url: None,
                    source: "knowledge_base".into(),
                },
                Some(vector),
            )
        })
        .collect()
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn search_bench(args: &Args) {
    let questions = questions();
    let vectors: Vec<Vec<f32>> = questions.iter().map(|q| kb_answer::embed(q)).collect();
    println!(
        "| passages | index (passages/s) | search p50 (ms) | search p99 (ms) | query embedding p50 (ms, native) |"
    );
    println!("|---|---|---|---|---|");
    for &size in &args.sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        let corpus = Corpus::open("knowledge", dir.path()).expect("open");
        let made = Instant::now();
        let all = passages(size);
        let generated = made.elapsed();
        // Indexing: batches of 1,000 passages, one commit each, as an
        // import does.
        let started = Instant::now();
        let mut generation = 0;
        let mut batch = Vec::with_capacity(1_000);
        for p in all {
            batch.push(p);
            if batch.len() == 1_000 {
                generation += 1;
                corpus
                    .apply(std::mem::take(&mut batch), &[], generation)
                    .expect("apply");
            }
        }
        if !batch.is_empty() {
            corpus.apply(batch, &[], generation + 1).expect("apply");
        }
        let rate = size as f64 / started.elapsed().as_secs_f64();

        let mut searches = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        let mut embeds = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        for i in 0..args.queries.min(200) {
            // Warm-up.
            corpus
                .search(
                    1,
                    &questions[i % questions.len()],
                    Some(&vectors[i % vectors.len()]),
                    20,
                )
                .expect("search");
        }
        for i in 0..args.queries {
            let q = &questions[i % questions.len()];
            let t = Instant::now();
            let v = kb_answer::embed(q);
            embeds
                .record(t.elapsed().as_micros().max(1) as u64)
                .expect("record");
            let t = Instant::now();
            let hits = corpus.search(1, q, Some(&v), 20).expect("search");
            searches
                .record(t.elapsed().as_micros().max(1) as u64)
                .expect("record");
            std::hint::black_box(hits);
        }
        println!(
            "| {size} | {rate:.0} | {:.2} | {:.2} | {:.3} |",
            ms(&searches, 0.50),
            ms(&searches, 0.99),
            ms(&embeds, 0.50),
        );
        eprintln!("  ({size} passages generated and embedded in {generated:.1?})");
    }
}

async fn end_to_end(args: &Args) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndata_dir = {:?}\n[rate_limits]\nenabled = false\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .expect("config");
    let clean = |cmd: &mut Command| {
        for key in [
            "GATEWAY_CONFIG",
            "GATEWAY_DATA_DIR",
            "DATABASE_URL",
            "GATEWAY_RATE_LIMITS",
            "RUST_LOG",
        ] {
            cmd.env_remove(key);
        }
    };
    for args in [
        vec![
            "kb".to_owned(),
            "import".into(),
            eval_dir().join("kb").display().to_string(),
        ],
        vec![
            "faq".into(),
            "import".into(),
            eval_dir().join("faqs.toml").display().to_string(),
        ],
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(&args).arg("--config").arg(&config);
        clean(&mut cmd);
        let out = cmd.output().expect("import");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(&config);
    clean(&mut cmd);
    let gateway = spawn_and_wait(cmd, true);

    let user = serde_json::json!({"username": "bench", "email": "bench@example.com", "password": "bench-password-1"});
    http_json(&gateway.addr, "POST", "/api/v1/auth/register", user).await;
    let token = http_json(
        &gateway.addr,
        "POST",
        "/api/v1/auth/login",
        serde_json::json!({"username": "bench", "password": "bench-password-1"}),
    )
    .await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let targets: Vec<Target> = questions()
        .iter()
        .map(|q| Target {
            addr: gateway.addr.clone(),
            method: hyper::Method::POST,
            path: "/api/core/messages".into(),
            token: Some(token.clone()),
            body: Some(Bytes::from(
                serde_json::json!({ "message": { "text": q } }).to_string(),
            )),
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let o = load_each(targets, args.connections, args.seconds).await;
    println!();
    println!(
        "| POST /api/core/messages, kb-answer, {} clients | requests/s | p50 (ms) | p99 (ms) | errors |",
        args.connections
    );
    println!("|---|---|---|---|---|");
    println!(
        "| SQLite, eval/ knowledge base | {:.0} | {:.2} | {:.2} | {} |",
        o.rps(),
        o.p(0.50),
        o.p(0.99),
        o.errors
    );
}

fn main() {
    let args = parse_args();
    if !args.skip_search {
        search_bench(&args);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(end_to_end(&args));
}
