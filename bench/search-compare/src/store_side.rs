//! Tsunagu's index: SEARCH (room, word, stream position) -> event ID in the store, one batch
//! per message, made durable before the next message (as the server does before it
//! acknowledges a send); searched as `service::search` does.

use std::{collections::BTreeMap, path::Path, time::Instant};

use ruma::{CanonicalJsonValue, OwnedEventId, OwnedRoomId, RoomId};
use serde_json::{Value, json};
use tsunagu::{
    config::StorageConfig,
    service::timeline::search_index::words,
    store::{Batch, EVENTS, SEARCH, Store, StoredEvent, TIMELINE},
};

use crate::{Corpus, WriteRun, cpu_time, disk_json, latency_summary, ms, proc_io, query_json};

/// As `service::search`: candidate events one search reads at most.
const MAX_CANDIDATES: usize = 2000;

/// A PDU as a federating server stores it: hashes, signatures, auth and prev events.
fn stored_event(corpus: &Corpus, i: usize, room: &OwnedRoomId, id: &OwnedEventId) -> StoredEvent {
    let m = &corpus.messages[i];
    let prev = if i > 0 {
        corpus.messages[i - 1].event_id.clone()
    } else {
        m.event_id.clone()
    };
    let pdu = json!({
        "auth_events": [
            "$cxdmTFUZ9z8IVnaHPyVQ9b6ZNQpCxqAgNLBTHl0o1Hs",
            "$JzHh1hObsMYPudQBVzjzFYgvFhcy7iSiIw6HOrGRpOg",
            "$NwDKdchm3KgxS7WWCQ0Utr7wyT7XQd1WlI0ZgHumD7c",
        ],
        "content": { "body": m.text, "msgtype": "m.text" },
        "depth": i + 10,
        "hashes": { "sha256": "GgThCOgLdsz5tk3p4l1MnkHSUrFvGLLjMhO7i5l5GdQ" },
        "origin_server_ts": 1_764_000_000_000u64 + i as u64 * 1000,
        "prev_events": [prev],
        "room_id": room.as_str(),
        "sender": format!("@user{}:example.org", m.sender),
        "signatures": { "example.org": { "ed25519:a_Fghj": "K5ZB0lS0N0Mdk1m4S/4BrpU3Up+OTfTr3Oq1kYW0J3TLhVtOkkuNKkGFrWNJc2EhlvsgZOWhzDvg1SmAjYM3Dg" } },
        "type": "m.room.message",
    });
    let CanonicalJsonValue::Object(pdu) = CanonicalJsonValue::try_from(pdu).expect("canonical")
    else {
        unreachable!()
    };
    StoredEvent {
        event_id: id.clone(),
        room_id: room.clone(),
        pos: i as u64 + 1,
        pdu,
        txn: None,
        replaces_state: None,
        redacted_because: None,
    }
}

/// As `Search::postings`: events of one room holding `word` (or a word it begins).
fn postings(store: &Store, room: &RoomId, word: &str, prefix: bool) -> BTreeMap<u64, OwnedEventId> {
    let mut out = BTreeMap::new();
    let scan = if prefix {
        SEARCH.prefix_text(room, word)
    } else {
        SEARCH.prefix2(room, word)
    };
    for item in store.scan(scan) {
        let ((_, _, pos), id) = item.expect("scan");
        out.insert(pos, id);
        if out.len() > MAX_CANDIDATES {
            break;
        }
    }
    out
}

/// As `Search::search` up to the candidates: every word's postings per room, intersected;
/// the last word of the query also as a prefix.
fn search(
    store: &Store,
    rooms: &[OwnedRoomId],
    term: &str,
) -> Vec<(OwnedRoomId, u64, OwnedEventId)> {
    let query = words(term);
    let last = term
        .split(|c: char| !c.is_alphanumeric())
        .rfind(|w| !w.is_empty())
        .map(str::to_lowercase);
    let mut candidates = Vec::new();
    for room in rooms {
        let mut hits: Option<BTreeMap<u64, OwnedEventId>> = None;
        for word in &query {
            let prefix = last.as_deref() == Some(word.as_str());
            let p = postings(store, room, word, prefix);
            hits = Some(match hits {
                None => p,
                Some(h) => h
                    .into_iter()
                    .filter(|(pos, _)| p.contains_key(pos))
                    .collect(),
            });
            if hits.as_ref().is_some_and(BTreeMap::is_empty) {
                break;
            }
        }
        for (pos, id) in hits.unwrap_or_default() {
            candidates.push((room.clone(), pos, id));
        }
        if candidates.len() > MAX_CANDIDATES {
            break;
        }
    }
    candidates
}

pub fn run(corpus: &Corpus, n: usize, dir: &Path, events: bool, index: bool) -> Value {
    let rooms: Vec<OwnedRoomId> = corpus
        .rooms
        .iter()
        .map(|r| OwnedRoomId::try_from(r.as_str()).expect("room id"))
        .collect();
    let ids: Vec<OwnedEventId> = corpus.messages[..n]
        .iter()
        .map(|m| OwnedEventId::try_from(m.event_id.as_str()).expect("event id"))
        .collect();
    let config = StorageConfig::default();
    let store = Store::open(dir, &config).expect("open store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");

    let mut latencies = Vec::with_capacity(n);
    let (w0, c0) = proc_io();
    let cpu0 = cpu_time();
    let start = Instant::now();
    for i in 0..n {
        let m = &corpus.messages[i];
        let room = &rooms[m.room];
        let pos = i as u64 + 1;
        let record = events.then(|| stored_event(corpus, i, room, &ids[i]));
        let t = Instant::now();
        let mut batch = Batch::default();
        if let Some(record) = &record {
            batch.put(&EVENTS, &ids[i], record);
            batch.put(&TIMELINE, (room, pos), &ids[i]);
        }
        if index {
            for word in words(&m.text) {
                batch.put(&SEARCH, (room, word.as_str(), pos), &ids[i]);
            }
        }
        store.apply(batch).expect("apply");
        rt.block_on(store.persist()).expect("persist");
        latencies.push(ms(t.elapsed()));
    }
    let wall = start.elapsed();
    let cpu = cpu_time() - cpu0;
    let (w1, c1) = proc_io();
    let write = WriteRun {
        latencies_ms: latencies,
        wall,
        cpu,
        write_bytes: w1 - w0,
        cancelled_bytes: c1 - c0,
        final_merge: None,
    }
    .json();
    let disk = disk_json(dir, n);

    let mut out = json!({
        "engine": format!("{:?}", config.engine),
        "cache_mb": config.cache_mb,
        "write": write,
        "disk": disk,
    });
    if index {
        let queries = corpus.queries();
        let run_query = |q: &crate::Query| {
            let scope: &[OwnedRoomId] = match q.room {
                Some(r) => std::slice::from_ref(&rooms[r]),
                None => &rooms,
            };
            search(&store, scope, &q.text).len()
        };
        // One pass to warm the page cache, then the measured pass.
        for q in &queries {
            run_query(q);
        }
        let mut results = Vec::new();
        for q in &queries {
            let t = Instant::now();
            let hits = run_query(q);
            results.push((q.clone(), ms(t.elapsed()), hits));
        }
        out["query"] = query_json(&results);
        out["query"]["capped_at_max_candidates"] =
            json!(results.iter().filter(|r| r.2 > MAX_CANDIDATES).count());

        let jq = corpus.japanese_queries(n);
        let mut found = 0;
        let mut lat = Vec::new();
        for q in &jq {
            let t = Instant::now();
            let hits = search(&store, std::slice::from_ref(&rooms[q.room]), &q.text);
            lat.push(ms(t.elapsed()));
            if hits.iter().any(|h| h.2 == ids[q.message]) {
                found += 1;
            }
        }
        out["japanese"] = json!({
            "found": format!("{found}/{}", jq.len()),
            "latency": latency_summary(lat),
            "queries": jq.iter().map(|q| q.text.clone()).collect::<Vec<_>>(),
        });
    }
    drop(store);
    out
}
