//! tantivy: room ID (raw string, indexed), event ID (stored), text (the `default` tokenizer:
//! split at anything not alphanumeric, lowercased, tokens over 40 bytes dropped; frequencies
//! for BM25, no positions since the server offers no phrase search). One indexing thread
//! with tantivy's smallest memory budget.

use std::{collections::HashSet, path::Path, time::Instant};

use serde_json::{Value, json};
use tantivy::{
    Index, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
    collector::{Count, DocSetCollector, TopDocs},
    query::{BooleanQuery, Occur, PhrasePrefixQuery, Query, TermQuery, TermSetQuery},
    schema::{
        Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
        Value as _,
    },
};

use crate::{Corpus, WriteRun, cpu_time, disk_json, latency_summary, ms, proc_io, query_json};

/// tantivy's smallest indexing memory budget per thread (`MEMORY_BUDGET_NUM_BYTES_MIN` in
/// tantivy/src/indexer/index_writer.rs: 15 × 1 MB); checked at run time below.
const MIN_BUDGET: usize = 15_000_000;

struct Fields {
    room: Field,
    event: Field,
    text: Field,
}

/// The query's words as tantivy's tokenizer cuts them, all required, the last also as a
/// prefix; in the given rooms.
fn build_query(index: &Index, f: &Fields, rooms: &[&str], text: &str) -> Box<dyn Query> {
    let mut analyzer = index.tokenizer_for_field(f.text).expect("analyzer");
    let mut tokens = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        tokens.push(stream.token().text.clone());
    }
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    let room_clause: Box<dyn Query> = if rooms.len() == 1 {
        Box::new(TermQuery::new(
            Term::from_field_text(f.room, rooms[0]),
            IndexRecordOption::Basic,
        ))
    } else {
        Box::new(TermSetQuery::new(
            rooms.iter().map(|r| Term::from_field_text(f.room, r)),
        ))
    };
    clauses.push((Occur::Must, room_clause));
    let last = tokens.len().saturating_sub(1);
    for (i, t) in tokens.iter().enumerate() {
        let term = Term::from_field_text(f.text, t);
        let q: Box<dyn Query> = if i == last {
            let mut p = PhrasePrefixQuery::new(vec![term]);
            p.set_max_expansions(u32::MAX);
            Box::new(p)
        } else {
            Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))
        };
        clauses.push((Occur::Must, q));
    }
    Box::new(BooleanQuery::new(clauses))
}

/// Count of matches and the event IDs of the best ten.
fn search(searcher: &Searcher, f: &Fields, q: &dyn Query) -> (usize, Vec<String>) {
    let (count, top) = searcher
        .search(q, &(Count, TopDocs::with_limit(10).order_by_score()))
        .expect("search");
    let ids = top
        .into_iter()
        .map(|(_, addr)| {
            let d: TantivyDocument = searcher.doc(addr).expect("doc");
            d.get_first(f.event)
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    (count, ids)
}

pub fn run(corpus: &Corpus, n: usize, dir: &Path, commit_every: usize) -> Value {
    let mut sb = Schema::builder();
    let room = sb.add_text_field("room", STRING);
    let event = sb.add_text_field("event_id", STORED);
    let text = sb.add_text_field(
        "text",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(IndexRecordOption::WithFreqs),
        ),
    );
    let schema = sb.build();
    let f = Fields { room, event, text };

    // tantivy refuses a budget below its minimum.
    let below = Index::create_in_ram(schema.clone())
        .writer_with_num_threads::<TantivyDocument>(1, MIN_BUDGET - 1)
        .err()
        .map(|e| e.to_string());
    let index = Index::create_in_dir(dir, schema).expect("create index");
    let mut writer: IndexWriter = index
        .writer_with_num_threads(1, MIN_BUDGET)
        .expect("writer");

    let mut latencies = Vec::with_capacity(n);
    let (w0, c0) = proc_io();
    let cpu0 = cpu_time();
    let start = Instant::now();
    for i in 0..n {
        let m = &corpus.messages[i];
        let t = Instant::now();
        let mut doc = TantivyDocument::default();
        doc.add_text(f.room, &corpus.rooms[m.room]);
        doc.add_text(f.event, &m.event_id);
        doc.add_text(f.text, &m.text);
        writer.add_document(doc).expect("add");
        if (i + 1) % commit_every == 0 || i + 1 == n {
            writer.commit().expect("commit");
        }
        latencies.push(ms(t.elapsed()));
    }
    let wall = start.elapsed();
    let t = Instant::now();
    writer.wait_merging_threads().expect("merges");
    let final_merge = t.elapsed();
    let cpu = cpu_time() - cpu0;
    let (w1, c1) = proc_io();
    let write = WriteRun {
        latencies_ms: latencies,
        wall,
        cpu,
        write_bytes: w1 - w0,
        cancelled_bytes: c1 - c0,
        final_merge: Some(final_merge),
    }
    .json();
    let disk = disk_json(dir, n);

    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
        .expect("reader");
    let reader: tantivy::IndexReader = reader;
    let searcher = reader.searcher();
    let segments = searcher.segment_readers().len();
    let all_rooms: Vec<&str> = corpus.rooms.iter().map(String::as_str).collect();
    let queries = corpus.queries();
    let run_query = |q: &crate::Query| {
        let scope: Vec<&str> = match q.room {
            Some(r) => vec![corpus.rooms[r].as_str()],
            None => all_rooms.clone(),
        };
        let query = build_query(&index, &f, &scope, &q.text);
        search(&searcher, &f, query.as_ref()).0
    };
    for q in &queries {
        run_query(q);
    }
    let mut results = Vec::new();
    for q in &queries {
        let t = Instant::now();
        let hits = run_query(q);
        results.push((q.clone(), ms(t.elapsed()), hits));
    }

    let jq = corpus.japanese_queries(n);
    let mut found = 0;
    let mut lat = Vec::new();
    for q in &jq {
        let t = Instant::now();
        let query = build_query(&index, &f, &[corpus.rooms[q.room].as_str()], &q.text);
        let docs = searcher
            .search(query.as_ref(), &DocSetCollector)
            .expect("search");
        let ids: HashSet<String> = docs
            .into_iter()
            .filter_map(|addr| {
                let d: TantivyDocument = searcher.doc(addr).ok()?;
                d.get_first(f.event)
                    .and_then(|v| v.as_str().map(str::to_owned))
            })
            .collect();
        lat.push(ms(t.elapsed()));
        if ids.contains(&corpus.messages[q.message].event_id) {
            found += 1;
        }
    }

    json!({
        "commit_every": commit_every,
        "memory_budget_bytes": MIN_BUDGET,
        "indexing_threads": 1,
        "budget_below_minimum": below,
        "segments_at_end": segments,
        "write": write,
        "disk": disk,
        "query": query_json(&results),
        "japanese": {
            "found": format!("{found}/{}", jq.len()),
            "latency": latency_summary(lat),
        },
    })
}
