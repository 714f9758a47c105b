//! Plugin benchmark: what a plugin call costs, beside the same logic as a
//! native Rust function, in one run; and how long loading a plugin takes
//! with and without the compiled-component cache.
//!
//! ```text
//! cargo bench --bench plugins                    # 20 000 calls per row
//! cargo bench --bench plugins -- --calls 100000
//! ```
//!
//! Rows:
//! - `kb-answer` answering a question from three passages: natively (the
//!   plugin crate linked into this binary), through the gateway's call path
//!   with a fresh pooled instance per call (what the gateway does), and on
//!   one reused instance;
//! - the `testbed` plugin in `echo` mode: the call overhead alone;
//! - cold start of each shipped plugin: compile (no cache), and load from
//!   the cache (read, check, deserialize, pre-instantiate).

use std::time::{Duration, Instant};

use gateway::config::Config;
use gateway::plugins::{ChatMessage, CompletionRequest, Passage, Plugins, Role, Runtime};
use hdrhistogram::Histogram;

const PLUGIN_DIR: &str = env!("GATEWAY_PLUGIN_DIR");

fn calls_arg() -> u64 {
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--calls" {
            return it.next().and_then(|v| v.parse().ok()).unwrap_or(20_000);
        }
    }
    20_000
}

const PASSAGES: [(&str, &str, &str); 3] = [
    (
        "kb-7",
        "Refunds",
        "Refunds are paid back to the original card within 5 business days of us receiving the return. Gift cards are not refundable. Shipping costs are refunded only for faulty items.",
    ),
    (
        "kb-12",
        "Shipping times",
        "Standard shipping takes 3 to 5 business days inside the EU. Express shipping arrives the next business day when ordered before 2 pm.",
    ),
    (
        "faq-3",
        "Changing an order",
        "You can change or cancel an order until it has been packed. Open the order in your account and choose Change order.",
    ),
];
const QUESTION: &str = "How many days until my refund reaches my card?";

fn host_request() -> CompletionRequest {
    CompletionRequest {
        system_prompt: None,
        messages: vec![ChatMessage {
            role: Role::User,
            content: QUESTION.into(),
        }],
        passages: PASSAGES
            .iter()
            .enumerate()
            .map(|(i, (id, title, content))| Passage {
                id: (*id).into(),
                title: (*title).into(),
                content: (*content).into(),
                relevance: 0.9 - 0.2 * i as f32,
            })
            .collect(),
        temperature: None,
        max_tokens: None,
    }
}

fn native_request() -> kb_answer_sdk::CompletionRequest {
    use kb_answer_sdk as sdk;
    sdk::CompletionRequest {
        system_prompt: None,
        messages: vec![sdk::ChatMessage {
            role: sdk::Role::User,
            content: QUESTION.into(),
        }],
        passages: PASSAGES
            .iter()
            .enumerate()
            .map(|(i, (id, title, content))| sdk::Passage {
                id: (*id).into(),
                title: (*title).into(),
                content: (*content).into(),
                relevance: 0.9 - 0.2 * i as f32,
            })
            .collect(),
        temperature: None,
        max_tokens: None,
    }
}

/// The SDK types the native kb-answer takes.
mod kb_answer_sdk {
    pub use gateway_plugin_sdk::{ChatMessage, CompletionRequest, Passage, Role};
}

struct Row {
    name: String,
    hist: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn us(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1000.0)
}

fn print_rows(rows: &[Row]) {
    println!("| call | calls | p50 | p99 | mean |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.name,
            r.hist.len(),
            us(r.hist.value_at_quantile(0.5)),
            us(r.hist.value_at_quantile(0.99)),
            us(r.hist.mean() as u64),
        );
    }
}

fn config(toml: &str) -> Config {
    Config::from_toml(toml, None, &Default::default()).expect("bench config")
}

fn entries() -> String {
    format!(
        r#"
[[plugins]]
id = "kb-answer"
path = "builtin:kb-answer"
world = "llm-provider"

[[plugins]]
id = "openai"
path = "builtin:openai"
world = "llm-provider"

[[plugins]]
id = "echo"
path = "{PLUGIN_DIR}/testbed.wasm"
world = "llm-provider"
settings = {{ mode = "echo" }}
"#
    )
}

fn main() {
    let calls = calls_arg();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache = tempfile::tempdir().expect("tempdir");
    let config = config(&entries());

    // Cold start: compile every component with no cache, then load the
    // same entries from a warm cache.
    let mut cold = Vec::new();
    for c in &config.plugins {
        let started = Instant::now();
        let runtime = std::sync::Arc::new(Runtime::new(&config.plugins, None).expect("runtime"));
        let engine_time = started.elapsed();
        let started = Instant::now();
        runtime.load(c, None).expect("load without cache");
        let compile = started.elapsed();
        cold.push((c.id.clone(), engine_time, compile));
    }
    let _warm_up = Plugins::load(&config.plugins, Some(cache.path()), None);
    let started = Instant::now();
    let plugins = Plugins::load(&config.plugins, Some(cache.path()), None);
    let all_from_cache = started.elapsed();
    let pooling = plugins.runtime().is_some_and(|r| r.pooling());

    let kb = match plugins.get("kb-answer") {
        Some(Ok(p)) => p,
        _ => panic!("kb-answer did not load"),
    };
    let echo = match plugins.get("echo") {
        Some(Ok(p)) => p,
        _ => panic!("echo did not load"),
    };
    let request = host_request();
    let native = native_request();

    // Sanity: the component and the native function agree.
    let from_wasm = rt.block_on(kb.complete(&request)).expect("wasm call");
    let from_native = kb_answer::answer(&native);
    assert_eq!(from_wasm.text, from_native.text);
    assert_eq!(from_wasm.used_passages, from_native.used_passages);

    let mut rows = Vec::new();

    let mut hist = histogram();
    for _ in 0..calls {
        let started = Instant::now();
        let answer = kb_answer::answer(std::hint::black_box(&native));
        std::hint::black_box(answer);
        hist.record(started.elapsed().as_nanos() as u64).ok();
    }
    rows.push(Row {
        name: "kb-answer, native Rust function".into(),
        hist,
    });

    let mut hist = histogram();
    rt.block_on(async {
        for _ in 0..calls {
            let started = Instant::now();
            let answer = kb.complete(&request).await.expect("call");
            std::hint::black_box(answer);
            hist.record(started.elapsed().as_nanos() as u64).ok();
        }
    });
    rows.push(Row {
        name: "kb-answer, fresh pooled instance per call (the gateway's path)".into(),
        hist,
    });

    let mut hist = histogram();
    rt.block_on(async {
        let mut session = kb.llm_session().await.expect("session");
        for _ in 0..calls {
            let started = Instant::now();
            let answer = session.complete(&request).await.expect("call");
            std::hint::black_box(answer);
            hist.record(started.elapsed().as_nanos() as u64).ok();
        }
    });
    rows.push(Row {
        name: "kb-answer, one reused instance".into(),
        hist,
    });

    let echo_request = CompletionRequest {
        passages: Vec::new(),
        ..host_request()
    };
    let mut hist = histogram();
    rt.block_on(async {
        for _ in 0..calls {
            let started = Instant::now();
            let answer = echo.complete(&echo_request).await.expect("call");
            std::hint::black_box(answer);
            hist.record(started.elapsed().as_nanos() as u64).ok();
        }
    });
    rows.push(Row {
        name: "echo (call overhead only), fresh pooled instance per call".into(),
        hist,
    });
    let mut hist = histogram();
    rt.block_on(async {
        let mut session = echo.llm_session().await.expect("session");
        for _ in 0..calls {
            let started = Instant::now();
            let answer = session.complete(&echo_request).await.expect("call");
            std::hint::black_box(answer);
            hist.record(started.elapsed().as_nanos() as u64).ok();
        }
    });
    rows.push(Row {
        name: "echo (call overhead only), one reused instance".into(),
        hist,
    });

    println!(
        "\nPlugin calls ({} allocator, {calls} calls per row, one thread):\n",
        if pooling { "pooling" } else { "on-demand" }
    );
    print_rows(&rows);

    println!("\nCold start per plugin:\n");
    println!("| plugin | component | compile (no cache) | load from cache |");
    println!("|---|---|---|---|");
    for entry in plugins.entries() {
        let gateway::plugins::Entry::Ready(p) = entry else {
            continue;
        };
        let (_, _, compile) = cold
            .iter()
            .find(|(id, _, _)| *id == p.config.id)
            .expect("measured");
        let size = match &p.config.source {
            gateway::config::ComponentSource::Builtin(name) => {
                gateway::plugins::builtin(name).map_or(0, <[u8]>::len)
            }
            gateway::config::ComponentSource::File(path) => {
                std::fs::metadata(path).map_or(0, |m| m.len() as usize)
            }
        };
        println!(
            "| {} | {} KB | {:.0} ms | {:.1} ms |",
            p.config.id,
            size / 1024,
            ms(*compile),
            ms(p.load_time),
        );
    }
    let engine = cold.first().map(|c| c.1).unwrap_or_default();
    println!(
        "\nEngine and linkers: {:.1} ms. All {} entries from the cache, engine included: {:.1} ms.",
        ms(engine),
        config.plugins.len(),
        ms(all_from_cache)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
