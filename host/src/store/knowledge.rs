//! Knowledge documents and their passages, FAQs, memories, the search
//! generations, and the assistant's columns on conversations and users.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Db, StoreError, on_db};
use crate::domain::knowledge::{Document, Faq, Memory, MemoryKind, NewDocument, NewFaq, NewMemory};

/// The two search corpora, as named in `search_generations`.
pub const KNOWLEDGE: &str = "knowledge";
pub const FAQ: &str = "faq";

/// A vector and the plugin that made it.
pub type Embedding = (String, Vec<f32>);

/// A passage as search loads it: with its document's title, url and source.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredPassage {
    pub id: i64,
    pub org_id: i64,
    pub document_id: i64,
    pub title: String,
    pub content: String,
    pub url: Option<String>,
    pub source: String,
    pub embedder: Option<String>,
    pub embedding: Option<Vec<u8>>,
}

/// An FAQ as search loads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredFaq {
    pub id: i64,
    pub org_id: i64,
    pub question: String,
    pub answer: String,
    pub category: String,
    pub embedder: Option<String>,
    pub embedding: Option<Vec<u8>>,
}

pub fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn decode_vector(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[derive(sqlx::FromRow)]
struct DocumentRow {
    id: i64,
    org_id: i64,
    title: String,
    body: String,
    url: Option<String>,
    source: String,
    source_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<DocumentRow> for Document {
    fn from(r: DocumentRow) -> Self {
        Document {
            id: r.id,
            org_id: r.org_id,
            title: r.title,
            body: r.body,
            url: r.url,
            source: r.source,
            source_id: r.source_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const DOCUMENT_COLUMNS: &str =
    "id, org_id, title, body, url, source, source_id, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct FaqRow {
    id: i64,
    org_id: i64,
    question: String,
    answer: String,
    category: String,
    view_count: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<FaqRow> for Faq {
    fn from(r: FaqRow) -> Self {
        Faq {
            id: r.id,
            org_id: r.org_id,
            question: r.question,
            answer: r.answer,
            category: r.category,
            view_count: r.view_count,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const FAQ_COLUMNS: &str =
    "id, org_id, question, answer, category, view_count, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct MemoryRow {
    id: i64,
    org_id: i64,
    user_ref: String,
    kind: String,
    key: String,
    value: String,
    metadata: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_accessed: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
}

impl From<MemoryRow> for Memory {
    fn from(r: MemoryRow) -> Self {
        Memory {
            id: r.id,
            org_id: r.org_id,
            user_ref: r.user_ref,
            kind: MemoryKind::parse(&r.kind).unwrap_or(MemoryKind::ShortTerm),
            key: r.key,
            value: serde_json::from_str(&r.value).unwrap_or(Value::Null),
            metadata: serde_json::from_str(&r.metadata)
                .unwrap_or_else(|_| Value::Object(Default::default())),
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_accessed: r.last_accessed,
            expires_at: r.expires_at,
        }
    }
}

const MEMORY_COLUMNS: &str = "id, org_id, user_ref, kind, key, value, metadata, created_at, updated_at, last_accessed, expires_at";

/// Bumps a corpus's generation inside `$tx` and yields the new value.
macro_rules! bump {
    ($tx:ident, $corpus:expr) => {
        sqlx::query_scalar::<_, i64>(
            "UPDATE search_generations SET generation = generation + 1 WHERE corpus = $1 RETURNING generation",
        )
        .bind($corpus)
        .fetch_one(&mut *$tx)
        .await
    };
}

/// Inserts a document's passages inside `$tx`, returning their ids.
macro_rules! insert_passages {
    ($tx:ident, $org:expr, $doc:expr, $passages:expr) => {{
        let mut ids = Vec::new();
        for (position, (content, embedding)) in $passages.iter().enumerate() {
            let embedding: &Option<Embedding> = embedding;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO kb_passages (org_id, document_id, position, content, embedder, embedding) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind($org)
            .bind($doc)
            .bind(position as i64)
            .bind(content)
            .bind(embedding.as_ref().map(|e| e.0.clone()))
            .bind(embedding.as_ref().map(|e| encode_vector(&e.1)))
            .fetch_one(&mut *$tx)
            .await?;
            ids.push(id);
        }
        Ok::<_, sqlx::Error>(ids)
    }};
}

impl Db {
    /// The generation a corpus is at.
    pub async fn search_generation(&self, corpus: &str) -> Result<i64, StoreError> {
        Ok(on_db!(self, pool => {
            sqlx::query_scalar("SELECT generation FROM search_generations WHERE corpus = $1")
                .bind(corpus)
                .fetch_one(pool)
                .await
        })?)
    }

    /// Stores a document and its passages (text and optional vector);
    /// answers the document, the passage ids in order and the knowledge
    /// generation after the change.
    pub async fn create_document(
        &self,
        org_id: i64,
        new: &NewDocument,
        passages: &[(String, Option<Embedding>)],
    ) -> Result<(Document, Vec<i64>, i64), StoreError> {
        let now = Utc::now();
        let sql = format!(
            "INSERT INTO kb_documents (org_id, title, body, url, source, source_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {DOCUMENT_COLUMNS}"
        );
        let out = on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: DocumentRow = sqlx::query_as(&sql)
                .bind(org_id)
                .bind(&new.title)
                .bind(&new.body)
                .bind(&new.url)
                .bind(&new.source)
                .bind(&new.source_id)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            let ids = insert_passages!(tx, org_id, row.id, passages)?;
            let generation = bump!(tx, KNOWLEDGE)?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>((row.into(), ids, generation))
        })?;
        Ok(out)
    }

    /// Replaces a document's text and passages; `None` when it is gone.
    /// Answers the old passage ids too, for the index.
    #[allow(clippy::type_complexity)]
    pub async fn update_document(
        &self,
        id: i64,
        new: &NewDocument,
        passages: &[(String, Option<Embedding>)],
    ) -> Result<Option<(Document, Vec<i64>, Vec<i64>, i64)>, StoreError> {
        let now = Utc::now();
        let sql = format!(
            "UPDATE kb_documents SET title = $2, body = $3, url = $4, source = $5, source_id = $6, updated_at = $7 \
             WHERE id = $1 RETURNING {DOCUMENT_COLUMNS}"
        );
        let out = on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: Option<DocumentRow> = sqlx::query_as(&sql)
                .bind(id)
                .bind(&new.title)
                .bind(&new.body)
                .bind(&new.url)
                .bind(&new.source)
                .bind(&new.source_id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let old: Vec<i64> = sqlx::query_scalar(
                "DELETE FROM kb_passages WHERE document_id = $1 RETURNING id",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            let ids = insert_passages!(tx, row.org_id, row.id, passages)?;
            let generation = bump!(tx, KNOWLEDGE)?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some((row.into(), old, ids, generation)))
        })?;
        Ok(out)
    }

    /// Deletes a document; answers its passage ids and the new generation,
    /// `None` when it was not there.
    pub async fn delete_document(&self, id: i64) -> Result<Option<(Vec<i64>, i64)>, StoreError> {
        let out = on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            let passages: Vec<i64> =
                sqlx::query_scalar("DELETE FROM kb_passages WHERE document_id = $1 RETURNING id")
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
            let gone = sqlx::query("DELETE FROM kb_documents WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if gone == 0 {
                return Ok(None);
            }
            let generation = bump!(tx, KNOWLEDGE)?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some((passages, generation)))
        })?;
        Ok(out)
    }

    pub async fn document(&self, id: i64) -> Result<Option<Document>, StoreError> {
        let sql = format!("SELECT {DOCUMENT_COLUMNS} FROM kb_documents WHERE id = $1");
        let row: Option<DocumentRow> = on_db!(self, pool => {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await
        })?;
        Ok(row.map(Into::into))
    }

    /// A page of an organization's documents, newest first, and the total.
    pub async fn list_documents(
        &self,
        org_id: i64,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<Document>, i64), StoreError> {
        let sql = format!(
            "SELECT {DOCUMENT_COLUMNS} FROM kb_documents WHERE org_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3"
        );
        let (rows, total): (Vec<DocumentRow>, i64) = on_db!(self, pool => {
            let rows = sqlx::query_as(&sql)
                .bind(org_id)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let total = sqlx::query_scalar("SELECT COUNT(*) FROM kb_documents WHERE org_id = $1")
                .bind(org_id)
                .fetch_one(pool)
                .await?;
            Ok::<_, sqlx::Error>((rows, total))
        })?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    /// Every passage of every organization, for building the search index.
    pub async fn all_passages(&self) -> Result<Vec<StoredPassage>, StoreError> {
        Ok(on_db!(self, pool => {
            sqlx::query_as(
                "SELECT p.id, p.org_id, p.document_id, d.title, p.content, d.url, d.source, p.embedder, p.embedding \
                 FROM kb_passages p JOIN kb_documents d ON d.id = p.document_id ORDER BY p.id",
            )
            .fetch_all(pool)
            .await
        })?)
    }

    /// Records vectors made after the fact (another embedder configured).
    pub async fn set_embeddings(
        &self,
        table: &str,
        vectors: &[(i64, Embedding)],
    ) -> Result<(), StoreError> {
        let sql = match table {
            KNOWLEDGE => "UPDATE kb_passages SET embedder = $2, embedding = $3 WHERE id = $1",
            _ => "UPDATE faqs SET embedder = $2, embedding = $3 WHERE id = $1",
        };
        on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            for (id, (embedder, v)) in vectors {
                sqlx::query(sql)
                    .bind(id)
                    .bind(embedder)
                    .bind(encode_vector(v))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Stores FAQs in one transaction; answers them and the FAQ generation.
    pub async fn create_faqs(
        &self,
        org_id: i64,
        faqs: &[(NewFaq, Option<Embedding>)],
    ) -> Result<(Vec<Faq>, i64), StoreError> {
        let now = Utc::now();
        let sql = format!(
            "INSERT INTO faqs (org_id, question, answer, category, embedder, embedding, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {FAQ_COLUMNS}"
        );
        let out = on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut out = Vec::with_capacity(faqs.len());
            for (faq, embedding) in faqs {
                let row: FaqRow = sqlx::query_as(&sql)
                    .bind(org_id)
                    .bind(&faq.question)
                    .bind(&faq.answer)
                    .bind(&faq.category)
                    .bind(embedding.as_ref().map(|e| e.0.clone()))
                    .bind(embedding.as_ref().map(|e| encode_vector(&e.1)))
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                out.push(Faq::from(row));
            }
            let generation = bump!(tx, FAQ)?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>((out, generation))
        })?;
        Ok(out)
    }

    pub async fn update_faq(
        &self,
        id: i64,
        faq: &NewFaq,
        embedding: Option<Embedding>,
    ) -> Result<Option<(Faq, i64)>, StoreError> {
        let sql = format!(
            "UPDATE faqs SET question = $2, answer = $3, category = $4, embedder = $5, embedding = $6, updated_at = $7 \
             WHERE id = $1 RETURNING {FAQ_COLUMNS}"
        );
        let out = on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: Option<FaqRow> = sqlx::query_as(&sql)
                .bind(id)
                .bind(&faq.question)
                .bind(&faq.answer)
                .bind(&faq.category)
                .bind(embedding.as_ref().map(|e| e.0.clone()))
                .bind(embedding.as_ref().map(|e| encode_vector(&e.1)))
                .bind(Utc::now())
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let generation = bump!(tx, FAQ)?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some((row.into(), generation)))
        })?;
        Ok(out)
    }

    pub async fn delete_faq(&self, id: i64) -> Result<Option<i64>, StoreError> {
        let out = on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            let gone = sqlx::query("DELETE FROM faqs WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if gone == 0 {
                return Ok(None);
            }
            let generation = bump!(tx, FAQ)?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(generation))
        })?;
        Ok(out)
    }

    pub async fn faq(&self, id: i64) -> Result<Option<Faq>, StoreError> {
        let sql = format!("SELECT {FAQ_COLUMNS} FROM faqs WHERE id = $1");
        let row: Option<FaqRow> = on_db!(self, pool => {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await
        })?;
        Ok(row.map(Into::into))
    }

    /// An organization's FAQs (of one category), oldest first. With
    /// `count_view`, each one's `view_count` goes up by one in the same
    /// statement: the listing is what customers read.
    pub async fn list_faqs(
        &self,
        org_id: i64,
        category: Option<&str>,
        count_view: bool,
    ) -> Result<Vec<Faq>, StoreError> {
        let sql = if count_view {
            format!(
                "UPDATE faqs SET view_count = view_count + 1 WHERE org_id = $1 AND ($2 IS NULL OR category = $2) \
                 RETURNING {FAQ_COLUMNS}"
            )
        } else {
            format!(
                "SELECT {FAQ_COLUMNS} FROM faqs WHERE org_id = $1 AND ($2 IS NULL OR category = $2) ORDER BY id"
            )
        };
        let mut rows: Vec<FaqRow> = on_db!(self, pool => {
            sqlx::query_as(&sql)
                .bind(org_id)
                .bind(category)
                .fetch_all(pool)
                .await
        })?;
        rows.sort_by_key(|r| r.id);
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Counts one view of an FAQ (cited in an answer).
    pub async fn count_faq_view(&self, id: i64) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        on_db!(self, pool => {
            sqlx::query("UPDATE faqs SET view_count = view_count + 1 WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    pub async fn all_faqs(&self) -> Result<Vec<StoredFaq>, StoreError> {
        Ok(on_db!(self, pool => {
            sqlx::query_as(
                "SELECT id, org_id, question, answer, category, embedder, embedding FROM faqs ORDER BY id",
            )
            .fetch_all(pool)
            .await
        })?)
    }

    /// Stores a memory, replacing the value of the same (user, type, key);
    /// answers it and whether it is new.
    pub async fn upsert_memory(&self, new: &NewMemory) -> Result<Memory, StoreError> {
        let now = Utc::now();
        let sql = format!(
            "INSERT INTO memories (org_id, user_ref, kind, key, value, metadata, created_at, updated_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) \
             ON CONFLICT (org_id, user_ref, kind, key) DO UPDATE SET value = excluded.value, \
             metadata = excluded.metadata, updated_at = excluded.updated_at, expires_at = excluded.expires_at \
             RETURNING {MEMORY_COLUMNS}"
        );
        let row: MemoryRow = on_db!(self, pool => {
            sqlx::query_as(&sql)
                .bind(new.org_id)
                .bind(&new.user_ref)
                .bind(new.kind.as_str())
                .bind(&new.key)
                .bind(new.value.to_string())
                .bind(new.metadata.to_string())
                .bind(now)
                .bind(new.expires_at)
                .fetch_one(pool)
                .await
        })?;
        Ok(row.into())
    }

    /// A user's unexpired memories (of one type, one key), oldest first.
    /// With `touch`, their `last_accessed` becomes now.
    pub async fn memories(
        &self,
        org_id: i64,
        user_ref: &str,
        kind: Option<MemoryKind>,
        key: Option<&str>,
        touch: bool,
    ) -> Result<Vec<Memory>, StoreError> {
        let now = Utc::now();
        let filter = "org_id = $1 AND user_ref = $2 AND ($3 IS NULL OR kind = $3) \
                      AND ($4 IS NULL OR key = $4) AND (expires_at IS NULL OR expires_at > $5)";
        let sql = if touch {
            format!(
                "UPDATE memories SET last_accessed = $5 WHERE {filter} RETURNING {MEMORY_COLUMNS}"
            )
        } else {
            format!("SELECT {MEMORY_COLUMNS} FROM memories WHERE {filter}")
        };
        let mut rows: Vec<MemoryRow> = on_db!(self, pool => {
            sqlx::query_as(&sql)
                .bind(org_id)
                .bind(user_ref)
                .bind(kind.map(MemoryKind::as_str))
                .bind(key)
                .bind(now)
                .fetch_all(pool)
                .await
        })?;
        rows.sort_by_key(|r| r.id);
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Drops expired memories; answers how many.
    pub async fn delete_expired_memories(&self) -> Result<u64, StoreError> {
        Ok(on_db!(self, pool => {
            sqlx::query("DELETE FROM memories WHERE expires_at IS NOT NULL AND expires_at <= $1")
                .bind(Utc::now())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?)
    }
}
