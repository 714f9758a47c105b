//! Changing what the assistant knows: documents and FAQs are written to the
//! database and to the search index in the same call, with vectors from the
//! configured embedding plugin. Start-up loads every entry and rebuilds an
//! index whose generation lags the database.

use crate::domain::knowledge::{Document, Faq, NewDocument, NewFaq, split_passages};
use crate::search::{Corpus, Entry, Hit};
use crate::store::knowledge::{Embedding, FAQ, KNOWLEDGE, decode_vector};

use super::{Assistant, AssistantError};

/// The weight of the fused rank score against relevance when merging
/// (tuned on `eval/`: 0 gives 90% top-3, 0.5-1.0 gives 93-94%).
const RANK_WEIGHT: f32 = 0.75;

/// Hits below this relevance are not results at all (a vector's faint
/// similarity with no word in common).
const RELEVANCE_FLOOR: f32 = 0.1;

/// Candidates each corpus offers before the two are merged.
const MERGE_DEPTH: usize = 20;

/// Texts embedded per plugin call.
const EMBED_BATCH: usize = 32;

/// How start-up found an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Startup {
    pub knowledge_entries: usize,
    pub faq_entries: usize,
    /// Corpora whose index was rebuilt from the database.
    pub rebuilt: usize,
    /// Vectors made because they were missing or from another embedder.
    pub embedded: usize,
}

fn faq_entry(f: &Faq) -> Entry {
    Entry {
        id: f.id,
        org_id: f.org_id,
        document_id: f.id,
        title: f.question.clone(),
        content: f.answer.clone(),
        url: None,
        source: "faq".into(),
    }
}

impl Assistant {
    /// Vectors for `texts` from the embedding plugin; `None` when none is
    /// configured or it fails (search then uses BM25 alone, and says so in
    /// the log).
    pub async fn embed(&self, texts: &[String]) -> Option<Vec<Embedding>> {
        let id = self.config.embeddings.as_deref()?;
        let plugin = match self.plugins.get(id) {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "embeddings unavailable; searching by words only");
                return None;
            }
            None => return None,
        };
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(EMBED_BATCH) {
            match plugin.embed(batch).await {
                Ok(e) => out.extend(e.vectors.into_iter().map(|v| (id.to_owned(), v))),
                Err(e) => {
                    tracing::warn!(error = %e, "embedding failed; searching by words only");
                    return None;
                }
            }
        }
        Some(out)
    }

    pub(super) async fn embed_query(&self, query: &str) -> Option<Vec<f32>> {
        self.embed(&[query.to_owned()])
            .await
            .and_then(|mut v| v.pop())
            .map(|(_, v)| v)
    }

    /// Runs blocking index work off the async threads; without an open
    /// index (command-line imports), does nothing.
    async fn index<T: Send + Default + 'static>(
        &self,
        work: impl FnOnce(&crate::search::Search) -> Result<T, crate::search::SearchError>
        + Send
        + 'static,
    ) -> Result<T, AssistantError> {
        let Some(search) = self.search.clone() else {
            return Ok(T::default());
        };
        tokio::task::spawn_blocking(move || work(&search))
            .await
            .map_err(|e| AssistantError::Unavailable(format!("search index task failed: {e}")))?
            .map_err(Into::into)
    }

    async fn passages_of(&self, new: &NewDocument) -> Vec<(String, Option<Embedding>)> {
        let texts = split_passages(&new.body);
        let texts = if texts.is_empty() {
            vec![new.title.clone()]
        } else {
            texts
        };
        // The title goes with each passage: it is what the passage is about.
        let framed: Vec<String> = texts
            .iter()
            .map(|t| format!("{}\n{t}", new.title))
            .collect();
        let vectors = self.embed(&framed).await;
        texts
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, vectors.as_ref().map(|v| v[i].clone())))
            .collect()
    }

    fn entries(
        org_id: i64,
        document: &Document,
        ids: &[i64],
        passages: Vec<(String, Option<Embedding>)>,
    ) -> Vec<(Entry, Option<Vec<f32>>)> {
        ids.iter()
            .zip(passages)
            .map(|(&id, (content, e))| {
                (
                    Entry {
                        id,
                        org_id,
                        document_id: document.id,
                        title: document.title.clone(),
                        content,
                        url: document.url.clone(),
                        source: document.source.clone(),
                    },
                    e.map(|e| e.1),
                )
            })
            .collect()
    }

    /// Stores a document; its passages are searchable when this returns.
    /// Answers the document, its passage ids and the vectors' dimension (0
    /// without embeddings).
    pub async fn add_document(
        &self,
        org_id: i64,
        new: &NewDocument,
    ) -> Result<(Document, Vec<i64>, usize), AssistantError> {
        let passages = self.passages_of(new).await;
        let dimension = passages
            .first()
            .and_then(|(_, e)| e.as_ref())
            .map_or(0, |e| e.1.len());
        let (document, ids, generation) = self.db.create_document(org_id, new, &passages).await?;
        let entries = Self::entries(org_id, &document, &ids, passages);
        self.index(move |s| s.knowledge.apply(entries, &[], generation))
            .await?;
        Ok((document, ids, dimension))
    }

    pub async fn update_document(
        &self,
        id: i64,
        new: &NewDocument,
    ) -> Result<Option<Document>, AssistantError> {
        let passages = self.passages_of(new).await;
        let Some((document, old, ids, generation)) =
            self.db.update_document(id, new, &passages).await?
        else {
            return Ok(None);
        };
        let org = document.org_id;
        let entries = Self::entries(org, &document, &ids, passages);
        let removed: Vec<(i64, i64)> = old.into_iter().map(|p| (org, p)).collect();
        self.index(move |s| s.knowledge.apply(entries, &removed, generation))
            .await?;
        Ok(Some(document))
    }

    pub async fn delete_document(&self, document: &Document) -> Result<bool, AssistantError> {
        let Some((passages, generation)) = self.db.delete_document(document.id).await? else {
            return Ok(false);
        };
        let removed: Vec<(i64, i64)> = passages.into_iter().map(|p| (document.org_id, p)).collect();
        self.index(move |s| s.knowledge.apply(Vec::new(), &removed, generation))
            .await?;
        Ok(true)
    }

    async fn faq_vectors(&self, faqs: &[NewFaq]) -> Vec<Option<Embedding>> {
        let texts: Vec<String> = faqs
            .iter()
            .map(|f| format!("{}\n{}", f.question, f.answer))
            .collect();
        match self.embed(&texts).await {
            Some(v) => v.into_iter().map(Some).collect(),
            None => vec![None; faqs.len()],
        }
    }

    /// Stores FAQs; they are searchable when this returns.
    pub async fn add_faqs(
        &self,
        org_id: i64,
        faqs: Vec<NewFaq>,
    ) -> Result<Vec<Faq>, AssistantError> {
        let vectors = self.faq_vectors(&faqs).await;
        let rows: Vec<(NewFaq, Option<Embedding>)> = faqs.into_iter().zip(vectors).collect();
        let (stored, generation) = self.db.create_faqs(org_id, &rows).await?;
        let entries: Vec<(Entry, Option<Vec<f32>>)> = stored
            .iter()
            .zip(rows)
            .map(|(f, (_, e))| (faq_entry(f), e.map(|e| e.1)))
            .collect();
        self.index(move |s| s.faq.apply(entries, &[], generation))
            .await?;
        Ok(stored)
    }

    pub async fn update_faq(&self, id: i64, faq: NewFaq) -> Result<Option<Faq>, AssistantError> {
        let vector = self
            .faq_vectors(std::slice::from_ref(&faq))
            .await
            .pop()
            .flatten();
        let Some((stored, generation)) = self.db.update_faq(id, &faq, vector.clone()).await? else {
            return Ok(None);
        };
        let entry = (faq_entry(&stored), vector.map(|e| e.1));
        self.index(move |s| s.faq.apply(vec![entry], &[], generation))
            .await?;
        Ok(Some(stored))
    }

    pub async fn delete_faq(&self, faq: &Faq) -> Result<bool, AssistantError> {
        let Some(generation) = self.db.delete_faq(faq.id).await? else {
            return Ok(false);
        };
        let removed = [(faq.org_id, faq.id)];
        self.index(move |s| s.faq.apply(Vec::new(), &removed, generation))
            .await?;
        Ok(true)
    }

    /// 003's knowledge search: knowledge passages and FAQs (hybrid each),
    /// merged by fused score, best first.
    pub async fn search_knowledge(
        &self,
        org_id: i64,
        query: &str,
        limit: usize,
    ) -> Result<Vec<Hit>, AssistantError> {
        let vector = self.embed_query(query).await;
        self.search_with(org_id, query, vector.as_deref(), limit)
    }

    pub(super) fn search_with(
        &self,
        org_id: i64,
        query: &str,
        vector: Option<&[f32]>,
        limit: usize,
    ) -> Result<Vec<Hit>, AssistantError> {
        let search = self.search()?;
        // Each corpus ranks its own candidates (BM25 and vectors fused).
        // Across the two, reciprocal ranks of a small FAQ corpus and a large
        // knowledge base do not compare: the order is the absolute relevance
        // plus the fused score relative to the best, weighted RANK_WEIGHT.
        let depth = limit.max(MERGE_DEPTH);
        let mut hits = search.knowledge.search(org_id, query, vector, depth)?;
        hits.extend(search.faq.search(org_id, query, vector, depth)?);
        let top = hits
            .iter()
            .map(|h| h.score)
            .fold(0.0f32, f32::max)
            .max(f32::EPSILON);
        let key = |h: &Hit| h.relevance + RANK_WEIGHT * h.score / top;
        hits.sort_by(|a, b| key(b).total_cmp(&key(a)));
        // One result per document (its best passage), and none that share
        // next to nothing with the question.
        let mut seen = std::collections::HashSet::new();
        hits.retain(|h| {
            h.relevance >= RELEVANCE_FLOOR
                && seen.insert((h.entry.source == "faq", h.entry.document_id))
        });
        hits.truncate(limit);
        Ok(hits)
    }

    /// The passage (`kb-<id>`) or FAQ (`faq-<id>`) a reply cites.
    pub fn cited(&self, org_id: i64, id: &str) -> Option<std::sync::Arc<Entry>> {
        let search = self.search.as_ref()?;
        if let Some(n) = id.strip_prefix("kb-").and_then(|n| n.parse().ok()) {
            search.knowledge.entry(org_id, n)
        } else {
            let n = id.strip_prefix("faq-")?.parse().ok()?;
            search.faq.entry(org_id, n)
        }
    }

    /// Loads every passage and FAQ into the search, embedding those whose
    /// vector is missing or from another plugin, and rebuilds an index that
    /// lags the database.
    pub async fn start(&self) -> Result<Startup, AssistantError> {
        let (knowledge_entries, e1, r1) = self.load(KNOWLEDGE).await?;
        let (faq_entries, e2, r2) = self.load(FAQ).await?;
        Ok(Startup {
            knowledge_entries,
            faq_entries,
            rebuilt: r1 + r2,
            embedded: e1 + e2,
        })
    }

    /// Rebuilds each index that lags the database: changes written by
    /// another node or by `gateway kb import`. Cheap when nothing changed.
    pub async fn sync(&self) -> Result<usize, AssistantError> {
        let Some(search) = &self.search else {
            return Ok(0);
        };
        let mut rebuilt = 0;
        for corpus in [KNOWLEDGE, FAQ] {
            let generation = self.db.search_generation(corpus).await?;
            let target = if corpus == KNOWLEDGE {
                &search.knowledge
            } else {
                &search.faq
            };
            if target.lags(generation) {
                rebuilt += self.load(corpus).await?.2;
            }
        }
        Ok(rebuilt)
    }

    /// Whether both indexes are open and hold the database's generation
    /// (a lagging index is caught up within `SYNC_EVERY`; one that stays
    /// behind cannot be written or read). `false` without a search.
    pub async fn index_healthy(&self) -> Result<bool, AssistantError> {
        let Some(search) = &self.search else {
            return Ok(false);
        };
        for corpus in [KNOWLEDGE, FAQ] {
            let generation = self.db.search_generation(corpus).await?;
            let target = if corpus == KNOWLEDGE {
                &search.knowledge
            } else {
                &search.faq
            };
            if target.generation().unwrap_or(0) < generation {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads one corpus from the database into the search: answers the
    /// entries loaded, the vectors made and whether the index was rebuilt.
    async fn load(&self, corpus: &'static str) -> Result<(usize, usize, usize), AssistantError> {
        let embedder = self.config.embeddings.clone();
        let current = |e: &Option<String>, v: &Option<Vec<u8>>| -> Option<Vec<f32>> {
            match (e, v, &embedder) {
                (Some(e), Some(v), Some(want)) if e == want => Some(decode_vector(v)),
                _ => None,
            }
        };
        // Read the generation first: a change landing during the read makes
        // the index lag, and the next sync reads again.
        let generation = self.db.search_generation(corpus).await?;
        let rows: Vec<(Entry, Option<String>, Option<Vec<u8>>)> = if corpus == KNOWLEDGE {
            self.db
                .all_passages()
                .await?
                .into_iter()
                .map(|p| {
                    (
                        Entry {
                            id: p.id,
                            org_id: p.org_id,
                            document_id: p.document_id,
                            title: p.title,
                            content: p.content,
                            url: p.url,
                            source: p.source,
                        },
                        p.embedder,
                        p.embedding,
                    )
                })
                .collect()
        } else {
            self.db
                .all_faqs()
                .await?
                .into_iter()
                .map(|f| {
                    (
                        Entry {
                            id: f.id,
                            org_id: f.org_id,
                            document_id: f.id,
                            title: f.question,
                            content: f.answer,
                            url: None,
                            source: "faq".into(),
                        },
                        f.embedder,
                        f.embedding,
                    )
                })
                .collect()
        };
        let mut entries = Vec::with_capacity(rows.len());
        let mut missing = Vec::new();
        for (entry, e, v) in rows {
            let vector = current(&e, &v);
            if vector.is_none() && embedder.is_some() {
                missing.push((entries.len(), format!("{}\n{}", entry.title, entry.content)));
            }
            entries.push((entry, vector));
        }
        let embedded = self.fill_vectors(corpus, &mut entries, missing).await?;
        let count = entries.len();
        let rebuilt = self.install(corpus, entries, generation).await?;
        Ok((count, embedded, rebuilt))
    }

    async fn fill_vectors(
        &self,
        table: &str,
        entries: &mut [(Entry, Option<Vec<f32>>)],
        missing: Vec<(usize, String)>,
    ) -> Result<usize, AssistantError> {
        if missing.is_empty() {
            return Ok(0);
        }
        let texts: Vec<String> = missing.iter().map(|(_, t)| t.clone()).collect();
        let Some(vectors) = self.embed(&texts).await else {
            return Ok(0);
        };
        let mut rows = Vec::with_capacity(vectors.len());
        for ((i, _), (embedder, v)) in missing.iter().zip(vectors) {
            entries[*i].1 = Some(v.clone());
            rows.push((entries[*i].0.id, (embedder, v)));
        }
        self.db.set_embeddings(table, &rows).await?;
        Ok(rows.len())
    }

    /// Loads `entries`; rebuilds the index when it lags `generation`.
    async fn install(
        &self,
        corpus: &'static str,
        entries: Vec<(Entry, Option<Vec<f32>>)>,
        generation: i64,
    ) -> Result<usize, AssistantError> {
        self.index(move |s| {
            let target: &Corpus = if corpus == KNOWLEDGE {
                &s.knowledge
            } else {
                &s.faq
            };
            if !target.lags(generation) {
                target.load(entries);
                Ok(0)
            } else {
                tracing::info!(
                    corpus,
                    entries = entries.len(),
                    "rebuilding the search index from the database"
                );
                target.rebuild(entries, generation)?;
                Ok(1)
            }
        })
        .await
    }
}
