//! The WebAssembly component host: loading, capabilities, limits.
//!
//! One [`Runtime`] (a wasmtime engine with the pooling allocator and epoch
//! interruption) serves every `[[plugins]]` entry. Loading an entry reads
//! the component, compiles it or loads it from the on-disk cache, checks
//! that it speaks our WIT version and exports its configured world, and
//! pre-instantiates it against that world's linker. A call then costs one
//! store and one instantiation from the pool (tens of microseconds) and
//! runs under the entry's limits:
//!
//! - a deadline (`grants.timeout_ms`): the epoch ticker interrupts guest
//!   code every tick to yield to tokio, and traps it once the deadline has
//!   passed; an outer tokio timeout covers time spent in async imports;
//! - a memory ceiling (`grants.memory_mb`), refused growth being reported
//!   as what it is rather than as the trap that follows;
//! - a number of concurrent calls (`grants.max_concurrent`);
//! - result checks: an answer that breaks the contract's promises (a NaN
//!   confidence, a vector of the wrong length) fails the call.
//!
//! A failed call fails alone: its store is dropped, and the entry and every
//! other entry keep serving. Failures are [`PluginError`]s naming the entry.

mod bindings;
mod cache;
mod channel;
mod host;
mod http;
mod llm;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store, UpdateDeadline};

use crate::config::{ComponentSource, PluginConfig, World};
use crate::store::Db;
pub use bindings::channel_api::{
    Attachment as ChannelAttachment, ChannelError, ComposedMail, ContentKind, DeliveryState,
    DeliveryStatus, InboundEvent, InboundMessage, Location, Media, OutboundMessage, SentMessage,
    Template, WebhookRequest, WebhookResponse,
};
pub use bindings::llm_api::{
    ChatMessage, Completion, CompletionRequest, Embeddings, LlmError, Passage, Role, Transcription,
    Usage,
};
pub use bindings::types::{Header, Pair};
pub use cache::CacheOutcome;
pub use channel::ChannelSession;
pub use http::is_public;
pub use llm::LlmSession;

use host::{EntryContext, HostState};

/// The WIT package every plugin is built against, and its version.
pub const WIT_PACKAGE: &str = "gateway:plugin";
pub const WIT_VERSION: (u64, u64, u64) = (0, 2, 0);

/// How often the epoch ticks: the granularity of deadlines, and how long
/// guest code runs before yielding its thread.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The shipped plugins, compiled into the binary by `build.rs`.
pub fn builtin(name: &str) -> Option<&'static [u8]> {
    match name {
        "kb-answer" => Some(include_bytes!(concat!(
            env!("GATEWAY_PLUGIN_DIR"),
            "/kb_answer.wasm"
        ))),
        "openai" => Some(include_bytes!(concat!(
            env!("GATEWAY_PLUGIN_DIR"),
            "/openai.wasm"
        ))),
        "whatsapp" => Some(include_bytes!(concat!(
            env!("GATEWAY_PLUGIN_DIR"),
            "/whatsapp.wasm"
        ))),
        "email" => Some(include_bytes!(concat!(
            env!("GATEWAY_PLUGIN_DIR"),
            "/email.wasm"
        ))),
        _ => None,
    }
}

/// Names accepted after `builtin:`.
pub const BUILTINS: [&str; 4] = ["kb-answer", "openai", "whatsapp", "email"];

/// Why a call failed. Every variant names the plugin entry in its message.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The entry did not load; the string says why.
    NotLoaded(String),
    /// The entry implements another world.
    WrongWorld(World),
    /// Every call slot stayed taken until the deadline.
    Busy,
    /// No answer within `grants.timeout_ms`.
    Timeout(Duration),
    /// The instance tried to grow its memory past `grants.memory_mb`.
    Memory(u64),
    /// The guest trapped (a Rust plugin's panic included).
    Trap(String),
    /// The answer broke the contract.
    Invalid(String),
    /// The plugin answered with an error of its own.
    Provider(LlmError),
    /// The channel plugin answered with an error of its own.
    Channel(ChannelError),
}

#[derive(Debug, Clone)]
pub struct PluginError {
    pub plugin: String,
    pub failure: Failure,
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.plugin;
        match &self.failure {
            Failure::NotLoaded(why) => write!(f, "plugin `{p}` is not loaded: {why}"),
            Failure::WrongWorld(w) => write!(
                f,
                "plugin `{p}` implements the {} world, not this function's",
                w.name()
            ),
            Failure::Busy => write!(
                f,
                "plugin `{p}` is busy: every call slot (grants.max_concurrent) stayed taken until the deadline"
            ),
            Failure::Timeout(d) => {
                write!(f, "plugin `{p}` did not answer within {} ms", d.as_millis())
            }
            Failure::Memory(mb) => {
                write!(f, "plugin `{p}` exceeded its memory limit of {mb} MiB")
            }
            Failure::Trap(why) => write!(f, "plugin `{p}` crashed: {why}"),
            Failure::Invalid(why) => write!(f, "plugin `{p}` returned an invalid answer: {why}"),
            Failure::Provider(e) => write!(f, "plugin `{p}`: {}", llm::describe(e)),
            Failure::Channel(e) => write!(f, "plugin `{p}`: {}", channel::describe(e)),
        }
    }
}

impl std::error::Error for PluginError {}

/// The engine and the linkers of the three worlds.
pub struct Runtime {
    engine: Engine,
    llm: Linker<HostState>,
    channel: Linker<HostState>,
    webhook: Linker<HostState>,
    cache: Option<cache::Cache>,
    pooling: bool,
}

impl Runtime {
    /// An engine sized for `entries`, caching compiled components in
    /// `cache_dir` (none: compile every time).
    pub fn new(entries: &[PluginConfig], cache_dir: Option<&Path>) -> Result<Runtime, String> {
        // Config validation keeps the sum within MAX_INSTANCES.
        let slots: u32 = entries
            .iter()
            .map(|e| e.grants.max_concurrent)
            .sum::<u32>()
            .saturating_add(16)
            .clamp(32, crate::config::plugins::MAX_INSTANCES + 16);
        let max_memory = entries
            .iter()
            .map(|e| e.grants.memory_bytes)
            .max()
            .unwrap_or(64 << 20)
            .max(64 << 20);
        let (engine, pooling) = match Self::engine(Some((slots, max_memory))) {
            Ok(engine) => (engine, true),
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable; instances are allocated on demand");
                (Self::engine(None)?, false)
            }
        };
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| format!("cannot start the epoch thread: {e}"))?;

        let llm = Self::linker(&engine, |l| {
            bindings::llm::LlmProvider::add_to_linker::<_, HasSelf<_>>(l, |s| s)
        })?;
        let channel = Self::linker(&engine, |l| {
            bindings::channel::Channel::add_to_linker::<_, HasSelf<_>>(l, |s| s)
        })?;
        let webhook = Self::linker(&engine, |l| {
            bindings::webhook::Webhook::add_to_linker::<_, HasSelf<_>>(l, |s| s)
        })?;
        let cache = match cache_dir {
            Some(dir) => match cache::Cache::open(dir, &engine) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "plugin cache unavailable; components are compiled at every start");
                    None
                }
            },
            None => None,
        };
        Ok(Runtime {
            engine,
            llm,
            channel,
            webhook,
            cache,
            pooling,
        })
    }

    fn engine(pool: Option<(u32, u64)>) -> Result<Engine, String> {
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        if let Some((slots, max_memory)) = pool {
            let mut p = wasmtime::PoolingAllocationConfig::default();
            // Per component: enough for what Rust and other toolchains emit
            // (a main module, a few shims), no more, so that one entry
            // cannot drain the pool.
            p.total_component_instances(slots)
                .total_core_instances(slots * 8)
                .total_memories(slots * 2)
                .total_tables(slots * 4)
                .total_stacks(slots)
                .max_core_instances_per_component(32)
                .max_memories_per_component(host::MAX_MEMORIES as u32)
                .max_tables_per_component(32)
                .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX))
                // A slot reused by the next call keeps its pages: only the
                // pages the call dirtied are reset (found with the kernel's
                // PAGEMAP_SCAN where it has one, Linux 6.7+), which saves
                // the page faults of a fresh mapping.
                .pagemap_scan(wasmtime::Enabled::Auto)
                .linear_memory_keep_resident(2 << 20)
                .table_keep_resident(64 << 10);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(p));
        }
        Engine::new(&config).map_err(|e| format!("cannot create the WebAssembly engine: {e}"))
    }

    fn linker(
        engine: &Engine,
        add: impl FnOnce(&mut Linker<HostState>) -> wasmtime::Result<()>,
    ) -> Result<Linker<HostState>, String> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| add(&mut linker))
            .map_err(|e| format!("cannot build the plugin linker: {e}"))?;
        Ok(linker)
    }

    /// Whether instances come from the pooling allocator.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// Loads one entry: read, compile (or load from cache), check, and
    /// pre-instantiate it.
    pub fn load(self: &Arc<Self>, config: &PluginConfig, db: Option<Db>) -> Result<Plugin, String> {
        let started = Instant::now();
        http::check_settings(&config.settings, &config.grants, &config.id)?;
        let bytes = read_component(&config.source)?;
        let (component, cached) = self.compile(&bytes)?;
        check_contract(&self.engine, &component, config.world)?;
        let linker = match config.world {
            World::LlmProvider => &self.llm,
            World::Channel => &self.channel,
            World::Webhook => &self.webhook,
        };
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| explain_link_error(&e, config.world))?;
        let pre = match config.world {
            World::LlmProvider => Pre::Llm(
                bindings::llm::LlmProviderPre::new(pre)
                    .map_err(|e| explain_link_error(&e, config.world))?,
            ),
            World::Channel => Pre::Channel(
                bindings::channel::ChannelPre::new(pre)
                    .map_err(|e| explain_link_error(&e, config.world))?,
            ),
            World::Webhook => Pre::Webhook(
                bindings::webhook::WebhookPre::new(pre)
                    .map_err(|e| explain_link_error(&e, config.world))?,
            ),
        };
        let http = http::Gate::new(&config.id, &config.grants)?;
        let settings = serde_json::to_string(&config.settings)
            .map_err(|e| format!("settings cannot be passed as JSON: {e}"))?;
        let ctx = Arc::new(EntryContext {
            id: config.id.clone(),
            settings,
            grants: config.grants.clone(),
            http,
            db,
        });
        Ok(Plugin {
            config: config.clone(),
            runtime: self.clone(),
            ctx,
            pre,
            slots: Semaphore::new(config.grants.max_concurrent as usize),
            load_time: started.elapsed(),
            cache: cached,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_failure: std::sync::Mutex::new(None),
        })
    }

    /// Compiles `bytes`, or loads the compiled form from the cache.
    pub fn compile(&self, bytes: &[u8]) -> Result<(Component, CacheOutcome), String> {
        if let Some(cache) = &self.cache
            && let Some(component) = cache.load(&self.engine, bytes)
        {
            return Ok((component, CacheOutcome::Hit));
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| format!("is not a valid component: {}", first_line(&e)))?;
        let outcome = match &self.cache {
            Some(cache) => match cache.store(&component, bytes) {
                Ok(()) => CacheOutcome::Stored,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the plugin cache");
                    CacheOutcome::Disabled
                }
            },
            None => CacheOutcome::Disabled,
        };
        Ok((component, outcome))
    }

    fn store(&self, ctx: Arc<EntryContext>, deadline: tokio::time::Instant) -> Store<HostState> {
        let mut store = Store::new(&self.engine, HostState::new(ctx, deadline));
        store.limiter(|s| &mut s.limiter);
        // Every tick: yield to tokio if time is left, interrupt otherwise.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            if tokio::time::Instant::now() >= ctx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        store
    }
}

fn read_component(source: &ComponentSource) -> Result<std::borrow::Cow<'static, [u8]>, String> {
    let bytes: std::borrow::Cow<'static, [u8]> = match source {
        ComponentSource::Builtin(name) => builtin(name)
            .ok_or_else(|| {
                format!(
                    "there is no shipped plugin named {name:?} (shipped: {})",
                    BUILTINS.join(", ")
                )
            })?
            .into(),
        ComponentSource::File(path) => std::fs::read(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .into(),
    };
    if !bytes.starts_with(b"\0asm") || bytes.len() < 8 {
        return Err(format!("{source} is not a WebAssembly file"));
    }
    // Byte 6 is the layer: 0 for a core module, 1 for a component.
    if bytes[6] == 0 {
        return Err(format!(
            "{source} is a core WebAssembly module, not a component: build it for wasm32-wasip2 \
             (or wrap it with `wasm-tools component new`)"
        ));
    }
    Ok(bytes)
}

/// Checks the component's `gateway:plugin` imports and exports: one
/// compatible version, and the configured world's export.
fn check_contract(engine: &Engine, component: &Component, world: World) -> Result<(), String> {
    let ty = component.component_type();
    let mut ours = Vec::new();
    for (name, _) in ty.imports(engine).chain(ty.exports(engine)) {
        if let Some(rest) = name.strip_prefix(&format!("{WIT_PACKAGE}/")) {
            let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
            ours.push((iface.to_owned(), version.to_owned()));
        }
    }
    let (major, minor, patch) = WIT_VERSION;
    let host = format!("{WIT_PACKAGE}@{major}.{minor}.{patch}");
    for (_, version) in &ours {
        let parsed: Vec<u64> = version.split('.').filter_map(|p| p.parse().ok()).collect();
        let compatible = match parsed.as_slice() {
            // 0.x: the minor version breaks; 1.0 on: the major version.
            [0, m, _] => major == 0 && *m == minor,
            [ma, _, _] => *ma == major && major > 0,
            _ => false,
        };
        if !compatible {
            let version = if version.is_empty() {
                "no version"
            } else {
                version
            };
            return Err(format!(
                "it was built against {WIT_PACKAGE}@{version}, but this gateway speaks {host}; \
                 rebuild it with a gateway-plugin-sdk for {major}.{minor}"
            ));
        }
    }
    let exports: Vec<String> = ty
        .exports(engine)
        .filter_map(|(n, _)| n.strip_prefix(&format!("{WIT_PACKAGE}/")))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect();
    if !exports.iter().any(|e| e == world.export()) {
        let actual: Vec<String> = World::ALL
            .into_iter()
            .filter(|w| exports.iter().any(|e| e == w.export()))
            .map(|w| format!("the {} world", w.name()))
            .collect();
        let actual = if actual.is_empty() {
            "no gateway world at all".to_owned()
        } else {
            actual.join(" and ")
        };
        return Err(format!(
            "world = \"{}\" needs an export of {WIT_PACKAGE}/{}, but the component implements {actual}",
            world.name(),
            world.export()
        ));
    }
    Ok(())
}

fn explain_link_error(e: &wasmtime::Error, world: World) -> String {
    let text = first_line(e);
    if text.contains("matching implementation was not found") || text.contains("import") {
        format!(
            "it imports something the {} world does not provide ({text})",
            world.name()
        )
    } else {
        format!("cannot be linked as the {} world: {text}", world.name())
    }
}

/// The error and its causes on one line.
fn first_line(e: &wasmtime::Error) -> String {
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        return trap.to_string();
    }
    let text = format!("{e:#}");
    text.lines().next().unwrap_or_default().to_owned()
}

enum Pre {
    Llm(bindings::llm::LlmProviderPre<HostState>),
    Channel(bindings::channel::ChannelPre<HostState>),
    #[allow(dead_code)] // called by the webhook plugin's issue
    Webhook(bindings::webhook::WebhookPre<HostState>),
}

/// A loaded `[[plugins]]` entry.
pub struct Plugin {
    pub config: PluginConfig,
    runtime: Arc<Runtime>,
    ctx: Arc<EntryContext>,
    pre: Pre,
    slots: Semaphore,
    /// How long loading took, and whether the cache served it.
    pub load_time: Duration,
    pub cache: CacheOutcome,
    calls: AtomicU64,
    failures: AtomicU64,
    last_failure: std::sync::Mutex<Option<String>>,
}

/// What one call holds while it runs.
struct Call<'a> {
    store: Store<HostState>,
    _permit: tokio::sync::SemaphorePermit<'a>,
    deadline: tokio::time::Instant,
}

impl Plugin {
    pub fn id(&self) -> &str {
        &self.config.id
    }

    fn error(&self, failure: Failure) -> PluginError {
        PluginError {
            plugin: self.config.id.clone(),
            failure,
        }
    }

    /// Takes a call slot and a fresh store, both bounded by the deadline.
    async fn begin(&self) -> Result<Call<'_>, PluginError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + self.config.grants.timeout;
        let permit = match tokio::time::timeout_at(deadline, self.slots.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(self.failed("call", self.error(Failure::Busy))),
        };
        Ok(Call {
            store: self.runtime.store(self.ctx.clone(), deadline),
            _permit: permit,
            deadline,
        })
    }

    /// Turns what a call's future produced into the call's result.
    fn finish<T>(
        &self,
        op: &'static str,
        call: &Call<'_>,
        outcome: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, PluginError> {
        let error = match outcome {
            Ok(Ok(value)) => return Ok(value),
            Err(_) => Failure::Timeout(self.config.grants.timeout),
            Ok(Err(e)) => {
                let state = call.store.data();
                if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt)
                    && tokio::time::Instant::now() >= call.deadline
                {
                    Failure::Timeout(self.config.grants.timeout)
                } else if e
                    .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                    .is_some()
                {
                    Failure::Busy
                } else if state.limiter.exceeded {
                    Failure::Memory(self.config.grants.memory_bytes >> 20)
                } else {
                    let mut why = first_line(&e);
                    if let Some(line) = state.last_stderr_line() {
                        why = format!("{why} ({line})");
                    }
                    Failure::Trap(why)
                }
            }
        };
        Err(self.failed(op, self.error(error)))
    }

    /// Counts and logs a failed call.
    fn failed(&self, op: &'static str, error: PluginError) -> PluginError {
        self.failures.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("plugin_call_failures_total", "plugin" => self.config.id.clone())
            .increment(1);
        tracing::warn!(plugin = %self.config.id, op, error = %error, "plugin call failed");
        if let Ok(mut last) = self.last_failure.lock() {
            *last = Some(error.to_string());
        }
        error
    }

    /// Instantiates the component once without calling it: proves that it
    /// fits the pool and its memory limit (used by `plugins check`).
    pub async fn probe(&self) -> Result<(), PluginError> {
        let mut call = self.begin().await?;
        let deadline = call.deadline;
        let outcome = match &self.pre {
            Pre::Llm(pre) => {
                tokio::time::timeout_at(deadline, pre.instantiate_async(&mut call.store))
                    .await
                    .map(|r| r.map(drop))
            }
            Pre::Channel(pre) => {
                tokio::time::timeout_at(deadline, pre.instantiate_async(&mut call.store))
                    .await
                    .map(|r| r.map(drop))
            }
            Pre::Webhook(pre) => {
                tokio::time::timeout_at(deadline, pre.instantiate_async(&mut call.store))
                    .await
                    .map(|r| r.map(drop))
            }
        };
        self.finish("instantiate", &call, outcome)
    }

    /// Calls so far, and how many failed.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.calls.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    pub fn last_failure(&self) -> Option<String> {
        self.last_failure.lock().ok().and_then(|l| l.clone())
    }
}

/// One entry's state: loaded, or why not.
#[allow(clippy::large_enum_variant)] // a handful per process
pub enum Entry {
    Ready(Arc<Plugin>),
    Failed { config: PluginConfig, error: String },
}

impl Entry {
    pub fn config(&self) -> &PluginConfig {
        match self {
            Entry::Ready(p) => &p.config,
            Entry::Failed { config, .. } => config,
        }
    }
}

/// Every configured entry, loaded at start-up.
pub struct Plugins {
    runtime: Option<Arc<Runtime>>,
    entries: Vec<Entry>,
    by_id: HashMap<String, usize>,
}

impl Plugins {
    /// Loads every entry. An entry that fails to load is kept as failed (and
    /// reported by `/health`); the others serve.
    pub fn load(configs: &[PluginConfig], cache_dir: Option<&Path>, db: Option<Db>) -> Plugins {
        let runtime = if configs.is_empty() {
            None
        } else {
            match Runtime::new(configs, cache_dir) {
                Ok(r) => Some(Arc::new(r)),
                Err(e) => {
                    tracing::error!(error = %e, "plugin runtime unavailable");
                    let entries = configs
                        .iter()
                        .map(|c| Entry::Failed {
                            config: c.clone(),
                            error: e.clone(),
                        })
                        .collect();
                    return Plugins::from_entries(None, entries);
                }
            }
        };
        let entries = configs
            .iter()
            .map(|config| {
                let runtime = runtime.as_ref().expect("created when there are entries");
                match runtime.load(config, db.clone()) {
                    Ok(plugin) => {
                        tracing::info!(
                            plugin = %config.id,
                            world = config.world.name(),
                            source = %config.source,
                            cache = plugin.cache.word(),
                            load_ms = plugin.load_time.as_secs_f64() * 1000.0,
                            "plugin loaded"
                        );
                        Entry::Ready(Arc::new(plugin))
                    }
                    Err(error) => {
                        tracing::error!(plugin = %config.id, source = %config.source, %error, "plugin failed to load");
                        Entry::Failed {
                            config: config.clone(),
                            error,
                        }
                    }
                }
            })
            .collect();
        Plugins::from_entries(runtime, entries)
    }

    fn from_entries(runtime: Option<Arc<Runtime>>, entries: Vec<Entry>) -> Plugins {
        let by_id = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.config().id.clone(), i))
            .collect();
        Plugins {
            runtime,
            entries,
            by_id,
        }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn runtime(&self) -> Option<&Arc<Runtime>> {
        self.runtime.as_ref()
    }

    /// The entry `id`, if configured.
    pub fn entry(&self, id: &str) -> Option<&Entry> {
        self.by_id.get(id).map(|&i| &self.entries[i])
    }

    /// The loaded plugin `id`, or why it cannot be called.
    pub fn get(&self, id: &str) -> Option<Result<Arc<Plugin>, PluginError>> {
        self.entry(id).map(|e| match e {
            Entry::Ready(p) => Ok(p.clone()),
            Entry::Failed { config, error } => Err(PluginError {
                plugin: config.id.clone(),
                failure: Failure::NotLoaded(error.clone()),
            }),
        })
    }
}

/// Where compiled components are kept under the data dir.
pub fn cache_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("plugin-cache")
}
