//! Knowledge and FAQ search: a tantivy index per corpus for BM25 and an
//! in-memory vector store beside it, fused by reciprocal rank.
//!
//! A [`Corpus`] holds the entries (knowledge passages, or FAQs) of every
//! organization. The tantivy index is partitioned by an `org` term that every
//! query must match, so one writer serves all tenants and no query crosses
//! them. Text is analysed for English: lower-cased, stop words removed,
//! Porter-stemmed; titles weigh [`TITLE_BOOST`] times the body.
//!
//! Vectors come from the configured embedding plugin and live in memory,
//! per organization, next to a one-bit-per-dimension sketch of each. A
//! query scans the sketches (Hamming distance, 32 bytes per 256-dimension
//! vector), rescores the closest [`RESCORE`] exactly, and fuses the two
//! rankings: `score = Σ 1 / (60 + rank)`. Small organizations skip the
//! sketch and score every vector exactly.
//!
//! The fused order decides the ranking; [`Hit::relevance`] reports how well
//! a hit matches in absolute terms, in (0, 1]: the IDF-weighted share of the
//! query's terms the entry contains, blended with the vector similarity.
//! The answer pipeline compares it with a threshold to decide that nothing
//! relevant was found.
//!
//! The index records the database generation it holds (the commit payload).
//! Start-up compares it with the database and rebuilds a lagging or missing
//! index; entries and vectors are always loaded from the database.

mod vectors;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

pub use vectors::Vectors;

/// How much a title match outweighs a body match.
pub const TITLE_BOOST: f32 = 2.0;
/// Candidates each ranking contributes to the fusion.
const CANDIDATES: usize = 50;
/// Sketch matches rescored exactly.
const RESCORE: usize = 256;
/// The reciprocal-rank constant.
const RRF_K: f32 = 60.0;
/// Weights of term coverage and vector similarity in `relevance`.
const COVERAGE_WEIGHT: f32 = 0.75;
const VECTOR_WEIGHT: f32 = 0.25;
/// The analyzer's name in tantivy's registry.
const ANALYZER: &str = "gateway_en";
/// The writer's memory budget.
const WRITER_HEAP: usize = 32 * 1024 * 1024;

/// Words that carry no topic in a support question, beyond tantivy's list.
const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "after",
    "again",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "been",
    "before",
    "being",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "don't",
    "for",
    "from",
    "get",
    "got",
    "had",
    "has",
    "have",
    "having",
    "he",
    "hello",
    "her",
    "here",
    "hey",
    "hi",
    "him",
    "his",
    "how",
    "i",
    "i'm",
    "if",
    "in",
    "into",
    "is",
    "it",
    "it's",
    "its",
    "just",
    "know",
    "let",
    "like",
    "may",
    "me",
    "might",
    "more",
    "most",
    "much",
    "must",
    "my",
    "myself",
    "need",
    "no",
    "not",
    "now",
    "of",
    "on",
    "one",
    "only",
    "or",
    "other",
    "our",
    "out",
    "please",
    "really",
    "she",
    "should",
    "so",
    "some",
    "still",
    "such",
    "tell",
    "than",
    "thank",
    "thanks",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "to",
    "too",
    "up",
    "us",
    "use",
    "very",
    "want",
    "was",
    "way",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "why",
    "will",
    "with",
    "would",
    "yes",
    "you",
    "your",
    "yours",
    "s",
    "t",
    "d",
    "ll",
    "m",
    "re",
    "ve",
    // How questions are asked, not what they are about.
    "many",
    "long",
    "take",
    "takes",
    "fast",
    "quick",
    "quickly",
    "soon",
    "possible",
    "able",
    "anything",
    "something",
    "someone",
    "okay",
    "ok",
    "actually",
    "wondering",
    "wonder",
];

/// Words customers use for the same thing. A query term also matches its
/// group's other words, at [`SYNONYM_WEIGHT`]. Single words only; they are
/// stemmed like everything else.
const SYNONYMS: &[&[&str]] = &[
    &["change", "update", "modify", "edit", "switch"],
    &["cancel", "close", "terminate", "stop"],
    &["delete", "remove", "erase", "wipe"],
    &["refund", "reimburse", "reimbursement", "money"],
    &["exchange", "swap", "replace", "replacement"],
    &[
        "deliver", "delivery", "ship", "shipping", "shipment", "courier", "dispatch",
    ],
    &["parcel", "package", "order", "shipment"],
    &["account", "login", "profile", "signin"],
    &["password", "passcode", "passphrase"],
    &["price", "cost", "fee", "charge", "pay", "payment"],
    &["broken", "faulty", "defective", "damaged", "dead"],
    &["warranty", "guarantee", "covered", "cover"],
    &["invoice", "receipt", "bill"],
    &["subscription", "plan", "membership"],
    &["dim", "dimming", "brightness", "bright", "brighter"],
    &["wifi", "wireless", "network", "router", "internet"],
    &[
        "watt",
        "watts",
        "w",
        "wattage",
        "power",
        "energy",
        "electricity",
    ],
    &[
        "kid", "kids", "child", "children", "family", "member", "guest",
    ],
    &[
        "abroad",
        "international",
        "overseas",
        "country",
        "countries",
    ],
    &["wake", "morning", "sunrise", "alarm"],
    &["phone", "mobile", "smartphone", "tablet"],
    &["help", "support", "assistance"],
];
/// A query term found in the body only earns this much of the credit it
/// earns in the title.
const BODY_CREDIT: f32 = 0.8;
/// How much a synonym's match counts against the word itself.
const SYNONYM_WEIGHT: f32 = 0.6;

/// Each stemmed word and the stemmed words of its synonym groups.
fn synonym_map(analyzer: &mut TextAnalyzer) -> HashMap<String, Vec<String>> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for group in SYNONYMS {
        let stems: Vec<String> = group
            .iter()
            .filter_map(|w| terms(analyzer, w).pop())
            .collect();
        for a in &stems {
            let entry = map.entry(a.clone()).or_default();
            for b in &stems {
                if a != b && !entry.contains(b) {
                    entry.push(b.clone());
                }
            }
        }
    }
    map
}

/// The analyzer every field and query uses.
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::remove(
            STOP_WORDS.iter().map(|w| (*w).to_owned()),
        ))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// The analysed terms of `text`, in order, repeats included.
pub fn terms(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

/// FNV-1a of an analysed term.
fn term_hash(term: &str) -> u32 {
    term.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// An entry's analysed terms, hashed and sorted: title and body apart.
#[derive(Debug, Default)]
struct TermSet {
    title: Box<[u32]>,
    body: Box<[u32]>,
}

impl TermSet {
    fn of(analyzer: &mut TextAnalyzer, entry: &Entry) -> TermSet {
        let mut hashed = |text: &str| {
            let mut v: Vec<u32> = terms(analyzer, text).iter().map(|t| term_hash(t)).collect();
            v.sort_unstable();
            v.dedup();
            v.into_boxed_slice()
        };
        TermSet {
            title: hashed(&entry.title),
            body: hashed(&entry.content),
        }
    }
}

/// One searchable entry: a knowledge passage or an FAQ.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The passage's (or FAQ's) id.
    pub id: i64,
    pub org_id: i64,
    /// The document it belongs to (the FAQ itself for FAQs).
    pub document_id: i64,
    pub title: String,
    pub content: String,
    pub url: Option<String>,
    /// `knowledge_base`, `faq`, or what a `/vectors` client said.
    pub source: String,
}

/// A search result.
#[derive(Debug, Clone)]
pub struct Hit {
    pub entry: Arc<Entry>,
    /// The fused reciprocal-rank score that orders the results.
    pub score: f32,
    /// How well the entry matches, in (0, 1].
    pub relevance: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("search index: {0}")]
    Open(String),
}

struct Fields {
    id: Field,
    org: Field,
    title: Field,
    body: Field,
}

/// One corpus: its tantivy index, its entries and their vectors.
pub struct Corpus {
    name: &'static str,
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    analyzer: TextAnalyzer,
    synonyms: HashMap<String, Vec<String>>,
    orgs: RwLock<HashMap<i64, Vectors>>,
    /// Each entry's analysed terms, hashed, for `relevance`: analysing
    /// candidates at query time would cost more than the search.
    term_sets: RwLock<HashMap<i64, TermSet>>,
    /// The last generation applied in this process, and whether a change
    /// from elsewhere (another node, the CLI) may be missing.
    applied: Mutex<(Option<i64>, bool)>,
}

impl Corpus {
    /// Opens (or creates) the index in `dir`. An index this version cannot
    /// read is removed and created anew: it is rebuilt from the database.
    pub fn open(name: &'static str, dir: &Path) -> Result<Corpus, SearchError> {
        let mut schema = Schema::builder();
        let text = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let fields = Fields {
            id: schema.add_u64_field("id", INDEXED | FAST),
            org: schema.add_u64_field("org", INDEXED),
            title: schema.add_text_field("title", text.clone()),
            body: schema.add_text_field("body", text),
        };
        let schema = schema.build();
        std::fs::create_dir_all(dir)
            .map_err(|e| SearchError::Open(format!("cannot create {}: {e}", dir.display())))?;
        let open = || -> Result<Index, SearchError> {
            let directory = tantivy::directory::MmapDirectory::open(dir)
                .map_err(|e| SearchError::Open(format!("{}: {e}", dir.display())))?;
            Ok(Index::open_or_create(directory, schema.clone())?)
        };
        let index = match open() {
            Ok(index) => index,
            Err(e) => {
                tracing::warn!(corpus = name, error = %e, "search index unreadable; recreating it");
                std::fs::remove_dir_all(dir).ok();
                std::fs::create_dir_all(dir).map_err(|e| SearchError::Open(e.to_string()))?;
                open()?
            }
        };
        index.tokenizers().register(ANALYZER, analyzer());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let writer = index.writer_with_num_threads(1, WRITER_HEAP)?;
        Ok(Corpus {
            name,
            index,
            reader,
            writer: Mutex::new(writer),
            fields,
            synonyms: synonym_map(&mut analyzer()),
            analyzer: analyzer(),
            orgs: RwLock::new(HashMap::new()),
            term_sets: RwLock::new(HashMap::new()),
            applied: Mutex::new((None, false)),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The database generation the index holds; `None` for a new index.
    pub fn generation(&self) -> Option<i64> {
        let metas = self.index.load_metas().ok()?;
        metas.payload?.parse().ok()
    }

    /// Whether the index must be rebuilt to hold generation `database`:
    /// its generation differs, or a generation was skipped (written by
    /// another process) since the last rebuild.
    pub fn lags(&self, database: i64) -> bool {
        let (_, skipped) = *self.applied.lock().unwrap_or_else(|e| e.into_inner());
        skipped || self.generation() != Some(database)
    }

    fn note_applied(&self, generation: i64, rebuilt: bool) {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let skipped = !rebuilt && applied.0.is_some_and(|last| generation != last + 1);
        *applied = (Some(generation), (applied.1 && !rebuilt) || skipped);
    }

    /// Entry `id` of `org`.
    pub fn entry(&self, org: i64, id: i64) -> Option<Arc<Entry>> {
        let orgs = self.orgs.read().unwrap_or_else(|e| e.into_inner());
        orgs.get(&org)?.entry(id)
    }

    /// Entries held for `org` (all organizations when `None`).
    pub fn len(&self, org: Option<i64>) -> usize {
        let orgs = self.orgs.read().unwrap_or_else(|e| e.into_inner());
        match org {
            Some(org) => orgs.get(&org).map_or(0, Vectors::len),
            None => orgs.values().map(Vectors::len).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len(None) == 0
    }

    /// Loads entries into memory without touching the index (start-up,
    /// when the index is current).
    pub fn load(&self, entries: Vec<(Entry, Option<Vec<f32>>)>) {
        if let Some(g) = self.generation() {
            self.note_applied(g, true);
        }
        self.remember_terms(&entries, &[]);
        let mut orgs = self.orgs.write().unwrap_or_else(|e| e.into_inner());
        for (entry, vector) in entries {
            orgs.entry(entry.org_id)
                .or_default()
                .upsert(Arc::new(entry), vector);
        }
    }

    /// Replaces the whole index with `entries` (and loads them), recording
    /// `generation`.
    pub fn rebuild(
        &self,
        entries: Vec<(Entry, Option<Vec<f32>>)>,
        generation: i64,
    ) -> Result<(), SearchError> {
        {
            let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            writer.delete_all_documents()?;
            for (entry, _) in &entries {
                writer.add_document(self.document(entry))?;
            }
            commit(&mut writer, generation)?;
        }
        self.reader.reload()?;
        self.orgs.write().unwrap_or_else(|e| e.into_inner()).clear();
        self.term_sets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.load(entries);
        self.note_applied(generation, true);
        Ok(())
    }

    /// Adds or replaces entries and removes `removed` ids, in one commit.
    pub fn apply(
        &self,
        upserts: Vec<(Entry, Option<Vec<f32>>)>,
        removed: &[(i64, i64)],
        generation: i64,
    ) -> Result<(), SearchError> {
        {
            let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            for (_, id) in removed {
                writer.delete_term(Term::from_field_u64(self.fields.id, *id as u64));
            }
            for (entry, _) in &upserts {
                writer.delete_term(Term::from_field_u64(self.fields.id, entry.id as u64));
                writer.add_document(self.document(entry))?;
            }
            commit(&mut writer, generation)?;
        }
        self.reader.reload()?;
        self.note_applied(generation, false);
        self.remember_terms(&upserts, removed);
        let mut orgs = self.orgs.write().unwrap_or_else(|e| e.into_inner());
        for (org, id) in removed {
            if let Some(v) = orgs.get_mut(org) {
                v.remove(*id);
            }
        }
        for (entry, vector) in upserts {
            orgs.entry(entry.org_id)
                .or_default()
                .upsert(Arc::new(entry), vector);
        }
        Ok(())
    }

    fn remember_terms(&self, upserts: &[(Entry, Option<Vec<f32>>)], removed: &[(i64, i64)]) {
        let mut analyzer = self.analyzer.clone();
        let made: Vec<(i64, TermSet)> = upserts
            .iter()
            .map(|(e, _)| (e.id, TermSet::of(&mut analyzer, e)))
            .collect();
        let mut sets = self.term_sets.write().unwrap_or_else(|e| e.into_inner());
        for (_, id) in removed {
            sets.remove(id);
        }
        sets.extend(made);
    }

    fn document(&self, entry: &Entry) -> TantivyDocument {
        let mut doc = TantivyDocument::default();
        doc.add_u64(self.fields.id, entry.id as u64);
        doc.add_u64(self.fields.org, entry.org_id as u64);
        doc.add_text(self.fields.title, &entry.title);
        doc.add_text(self.fields.body, &entry.content);
        doc
    }

    /// The `limit` best entries of `org` for `query` (and its vector).
    pub fn search(
        &self,
        org: i64,
        query: &str,
        vector: Option<&[f32]>,
        limit: usize,
    ) -> Result<Vec<Hit>, SearchError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut analyzer = self.analyzer.clone();
        let mut query_terms = terms(&mut analyzer, query);
        let mut seen = HashSet::new();
        query_terms.retain(|t| seen.insert(t.clone()));

        let searcher = self.reader.searcher();
        let total_docs = searcher.num_docs().max(1) as f32;
        // IDF of each query term, for coverage.
        let mut idf = Vec::with_capacity(query_terms.len());
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for t in &query_terms {
            let title = Term::from_field_text(self.fields.title, t);
            let body = Term::from_field_text(self.fields.body, t);
            let df = searcher.doc_freq(&body)?.max(searcher.doc_freq(&title)?) as f32;
            idf.push((1.0 + (total_docs - df + 0.5) / (df + 0.5)).ln());
            let alternatives = self.synonyms.get(t).map(Vec::as_slice).unwrap_or_default();
            for (word, weight) in
                std::iter::once((t, 1.0)).chain(alternatives.iter().map(|a| (a, SYNONYM_WEIGHT)))
            {
                for (field, boost) in [(self.fields.title, TITLE_BOOST), (self.fields.body, 1.0)] {
                    clauses.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(
                            Box::new(TermQuery::new(
                                Term::from_field_text(field, word),
                                IndexRecordOption::WithFreqs,
                            )),
                            boost * weight,
                        )),
                    ));
                }
            }
        }

        let mut fused: HashMap<i64, f32> = HashMap::new();
        if !clauses.is_empty() {
            let query = BooleanQuery::new(vec![
                (
                    Occur::Must,
                    Box::new(TermQuery::new(
                        Term::from_field_u64(self.fields.org, org as u64),
                        IndexRecordOption::Basic,
                    )) as Box<dyn Query>,
                ),
                (Occur::Must, Box::new(BooleanQuery::new(clauses))),
            ]);
            let top = searcher.search(&query, &TopDocs::with_limit(CANDIDATES).order_by_score())?;
            for (rank, (_, address)) in top.into_iter().enumerate() {
                let ids = searcher
                    .segment_reader(address.segment_ord)
                    .fast_fields()
                    .u64("id")?;
                if let Some(id) = ids.first(address.doc_id) {
                    *fused.entry(id as i64).or_default() += 1.0 / (RRF_K + rank as f32 + 1.0);
                }
            }
        }

        let orgs = self.orgs.read().unwrap_or_else(|e| e.into_inner());
        let Some(store) = orgs.get(&org) else {
            return Ok(Vec::new());
        };
        if let Some(vector) = vector {
            for (rank, (id, _)) in store
                .nearest(vector, CANDIDATES, RESCORE)
                .into_iter()
                .enumerate()
            {
                *fused.entry(id).or_default() += 1.0 / (RRF_K + rank as f32 + 1.0);
            }
        }
        let mut ranked: Vec<(i64, f32)> = fused.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(limit);

        let idf_total: f32 = idf.iter().sum();
        let mut hits = Vec::with_capacity(ranked.len());
        for (id, score) in ranked {
            let Some(entry) = store.entry(id) else {
                continue;
            };
            let coverage = if idf_total > 0.0 {
                let sets = self.term_sets.read().unwrap_or_else(|e| e.into_inner());
                let empty = TermSet::default();
                let set = sets.get(&id).unwrap_or(&empty);
                // Full credit in the title, less in the body alone; a
                // synonym earns its weight of that.
                let credit = |t: &String| {
                    let h = term_hash(t);
                    if set.title.binary_search(&h).is_ok() {
                        1.0
                    } else if set.body.binary_search(&h).is_ok() {
                        BODY_CREDIT
                    } else {
                        0.0
                    }
                };
                query_terms
                    .iter()
                    .zip(&idf)
                    .map(|(t, w)| {
                        let direct = credit(t);
                        let via = self.synonyms.get(t).map_or(0.0, |alts| {
                            alts.iter().map(credit).fold(0.0f32, f32::max) * SYNONYM_WEIGHT
                        });
                        w * direct.max(via)
                    })
                    .sum::<f32>()
                    / idf_total
            } else {
                0.0
            };
            let similarity = vector
                .and_then(|v| store.similarity(id, v))
                .unwrap_or(0.0)
                .max(0.0);
            let relevance =
                (COVERAGE_WEIGHT * coverage + VECTOR_WEIGHT * similarity).clamp(f32::EPSILON, 1.0);
            hits.push(Hit {
                entry,
                score,
                relevance,
            });
        }
        Ok(hits)
    }
}

fn commit(writer: &mut IndexWriter, generation: i64) -> Result<(), SearchError> {
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(&generation.to_string());
    prepared.commit()?;
    Ok(())
}

/// Both corpora.
pub struct Search {
    pub knowledge: Corpus,
    pub faq: Corpus,
}

impl Search {
    /// Opens the indexes under `<data_dir>/search`.
    pub fn open(data_dir: &Path) -> Result<Search, SearchError> {
        let root = data_dir.join("search");
        Ok(Search {
            knowledge: Corpus::open("knowledge", &root.join("knowledge"))?,
            faq: Corpus::open("faq", &root.join("faq"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, org: i64, title: &str, content: &str) -> (Entry, Option<Vec<f32>>) {
        (
            Entry {
                id,
                org_id: org,
                document_id: id,
                title: title.into(),
                content: content.into(),
                url: None,
                source: "knowledge_base".into(),
            },
            None,
        )
    }

    #[test]
    fn bm25_stems_filters_by_org_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("as expected");
        let corpus = Corpus::open("knowledge", dir.path()).expect("as expected");
        assert_eq!(corpus.generation(), None);
        corpus
            .apply(
                vec![
                    entry(
                        1,
                        1,
                        "Return policy",
                        "Items can be returned within 30 days.",
                    ),
                    entry(2, 1, "Shipping", "Parcels ship in two days."),
                    entry(3, 2, "Return policy", "Another tenant's returns."),
                ],
                &[],
                7,
            )
            .expect("as expected");
        let hits = corpus
            .search(1, "How do I return my item?", None, 5)
            .expect("as expected");
        assert_eq!(hits[0].entry.id, 1, "{hits:?}");
        assert!(hits.iter().all(|h| h.entry.org_id == 1));
        // Without vectors, relevance is the term coverage's share: "return"
        // in the title, "item" in the body.
        assert!(
            hits[0].relevance > 0.6 && hits[0].relevance <= 1.0,
            "{hits:?}"
        );
        assert!(
            corpus
                .search(1, "the of and", None, 5)
                .expect("as expected")
                .is_empty()
        );
        corpus.apply(Vec::new(), &[(1, 1)], 8).expect("as expected");
        let hits = corpus.search(1, "returning", None, 5).expect("as expected");
        assert!(hits.is_empty(), "{hits:?}");
        drop(corpus);
        let again = Corpus::open("knowledge", dir.path()).expect("as expected");
        assert_eq!(again.generation(), Some(8));
    }

    #[test]
    fn vectors_fuse_with_bm25() {
        let dir = tempfile::tempdir().expect("as expected");
        let corpus = Corpus::open("knowledge", dir.path()).expect("as expected");
        let mut a = entry(1, 1, "Alpha", "zebra crossing");
        a.1 = Some(vec![1.0, 0.0]);
        let mut b = entry(2, 1, "Beta", "nothing shared");
        b.1 = Some(vec![0.0, 1.0]);
        corpus.apply(vec![a, b], &[], 1).expect("as expected");
        // No shared words with entry 2, but its vector is the query's.
        let hits = corpus
            .search(1, "unrelated words", Some(&[0.0, 1.0]), 5)
            .expect("as expected");
        assert_eq!(hits[0].entry.id, 2);
        assert!((hits[0].relevance - VECTOR_WEIGHT).abs() < 1e-3);
    }
}
