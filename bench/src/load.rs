//! The load phase: sender workers and one long-polling `/sync` receiver per room.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::{
    sync::{oneshot, watch},
    time::Instant,
};

use crate::matrix::{Hs, User, enc, short};

/// One message send: who, where, its per-sender sequence number, and how it went.
#[derive(Debug)]
pub struct SendRec {
    pub sender: usize,
    pub room: usize,
    pub seq: u64,
    pub start: Instant,
    pub latency: Duration,
    pub event_id: Option<String>,
    pub error: Option<String>,
}

/// A benchmark message as a receiver saw it.
#[derive(Debug)]
pub struct Arrival {
    pub sender: usize,
    pub seq: u64,
    pub event_id: String,
    pub at: Instant,
}

/// What one receiver saw.
#[derive(Debug, Default)]
pub struct RecvResult {
    pub arrivals: Vec<Arrival>,
    pub syncs: u64,
    /// Sync answers whose timeline was `limited` (a gap), filled by paginating `/messages`.
    pub limited_gaps: u64,
    pub errors: Vec<String>,
    pub timed_out: bool,
}

/// Everything the senders share.
pub struct SendPlan {
    pub hs: Hs,
    pub run: String,
    pub users: Arc<Vec<User>>,
    pub rooms: Arc<Vec<String>>,
    /// Next global message number; a fixed run stops at `limit`.
    pub next: AtomicU64,
    pub limit: Option<u64>,
    /// Set when a soak run's time is up.
    pub stop: AtomicBool,
    /// Completed sends (successful or not), for progress lines.
    pub done: AtomicU64,
    /// Sends in a row that got no HTTP answer at all.
    pub unanswered_in_a_row: AtomicU64,
    /// Why the run was cut short (server gone or unreachable), if it was.
    pub aborted: Mutex<Option<String>>,
}

/// Sends in a row without any HTTP answer after which the run is abandoned.
const MAX_UNANSWERED_IN_A_ROW: u64 = 50;

impl SendPlan {
    /// Stops every sender and records why; the run will be reported as failed.
    pub fn abort(&self, why: String) {
        let mut a = self.aborted.lock().unwrap_or_else(|e| e.into_inner());
        if a.is_none() {
            eprintln!("tsunagu-bench: stopping the run: {why}");
            *a = Some(why);
        }
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The room a sender writes to: user i is a member of room i % R.
pub fn room_of(sender: usize, rooms: usize) -> usize {
    sender % rooms
}

/// One worker: sends from its own senders in turn, one request at a time, so each sender's
/// messages are sequential and their order in the room must be their send order.
pub async fn worker(plan: Arc<SendPlan>, senders: Vec<usize>) -> Vec<SendRec> {
    let mut recs = Vec::new();
    if senders.is_empty() {
        return recs;
    }
    let mut seqs = vec![0u64; senders.len()];
    let mut turn = 0usize;
    loop {
        if plan.stop.load(Ordering::Relaxed) {
            break;
        }
        let g = plan.next.fetch_add(1, Ordering::Relaxed);
        if plan.limit.is_some_and(|l| g >= l) {
            break;
        }
        let i = turn % senders.len();
        turn += 1;
        let sender = senders[i];
        let seq = seqs[i];
        seqs[i] += 1;
        let room = room_of(sender, plan.rooms.len());
        let txn = format!("{}-{sender}-{seq}", plan.run);
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            enc(&plan.rooms[room])
        );
        let body = json!({
            "msgtype": "m.text",
            "body": format!("bench {} sender {sender} message {seq}", plan.run),
            "tsunagu_bench": { "run": plan.run, "sender": sender, "seq": seq, "n": g },
        });
        let start = Instant::now();
        let r = plan
            .hs
            .call(
                Method::PUT,
                &path,
                Some(&plan.users[sender].token),
                Some(&body),
                Duration::from_secs(60),
            )
            .await;
        let latency = start.elapsed();
        if r.is_ok() {
            plan.unanswered_in_a_row.store(0, Ordering::Relaxed);
        }
        let (event_id, error) = match r {
            Ok(r) if r.status == 200 => match r.body.get("event_id").and_then(Value::as_str) {
                Some(id) => (Some(id.to_owned()), None),
                None => (
                    None,
                    Some(format!("200 without event_id: {}", short(&r.body))),
                ),
            },
            Ok(r) => (None, Some(format!("HTTP {}: {}", r.status, short(&r.body)))),
            Err(e) => {
                // No answer at all: back off, and give up on a server that is gone rather
                // than spin through the rest of the run.
                let n = plan.unanswered_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= MAX_UNANSWERED_IN_A_ROW {
                    plan.abort(format!("{n} sends in a row got no answer; last: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                (None, Some(e))
            }
        };
        plan.done.fetch_add(1, Ordering::Relaxed);
        recs.push(SendRec {
            sender,
            room,
            seq,
            start,
            latency,
            event_id,
            error,
        });
    }
    recs
}

/// When to stop: how many distinct messages each room should see, and the deadline.
pub type Drain = Option<(Arc<Vec<usize>>, Instant)>;

/// Long-polls `/sync` for one room as one of its members, recording every benchmark message
/// (this run's) with its arrival time. Reports ready after the first (timeout=0) sync; stops
/// when the room has all the messages `ctl` announces, or at its deadline.
pub async fn receiver(
    hs: Hs,
    token: String,
    room_idx: usize,
    room_id: String,
    run: String,
    ready: oneshot::Sender<Result<(), String>>,
    mut ctl: watch::Receiver<Drain>,
) -> RecvResult {
    let mut out = RecvResult::default();
    let filter =
        enc(&json!({ "room": { "rooms": [room_id], "timeline": { "limit": 1000 } } }).to_string());
    let mut seen: HashSet<String> = HashSet::new();
    let mut counted: HashSet<(usize, u64)> = HashSet::new();

    // First sync: the starting token, before any benchmark message is sent.
    let first = hs
        .get(
            &format!("/_matrix/client/v3/sync?filter={filter}&timeout=0"),
            Some(&token),
            Duration::from_secs(120),
        )
        .await
        .and_then(|r| r.ok("initial /sync of a receiver"));
    let mut since = match first {
        Ok(body) => {
            for ev in timeline_of(&body, &room_id).1 {
                if let Some(id) = ev.get("event_id").and_then(Value::as_str) {
                    seen.insert(id.to_owned());
                }
            }
            match body.get("next_batch").and_then(Value::as_str) {
                Some(t) => t.to_owned(),
                None => {
                    let _ = ready.send(Err("initial /sync without next_batch".into()));
                    return out;
                }
            }
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return out;
        }
    };
    let _ = ready.send(Ok(()));

    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    loop {
        let deadline = {
            let drain = ctl.borrow_and_update().clone();
            match drain {
                Some((expected, deadline)) => {
                    if counted.len() >= expected[room_idx] {
                        break;
                    }
                    if Instant::now() >= deadline {
                        out.timed_out = true;
                        break;
                    }
                    deadline
                }
                None => far,
            }
        };
        let path = format!(
            "/_matrix/client/v3/sync?filter={filter}&timeout=30000&since={}",
            enc(&since)
        );
        let reply = tokio::select! {
            r = hs.get(&path, Some(&token), Duration::from_secs(90)) => r,
            _ = ctl.changed() => continue,
            _ = tokio::time::sleep_until(deadline) => continue,
        };
        out.syncs += 1;
        let body = match reply.and_then(|r| r.ok("/sync")) {
            Ok(b) => b,
            Err(e) => {
                out.errors.push(e);
                if out.errors.len() > 50 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let now = Instant::now();
        let (limited, events, prev_batch) = timeline_of(&body, &room_id);
        let mut events: Vec<Value> = events.to_vec();
        if limited && let Some(pb) = prev_batch {
            // The server skipped events (more than the timeline limit since our token): fetch
            // the gap from /messages back to the last event we saw.
            out.limited_gaps += 1;
            match backfill(&hs, &token, &room_id, &pb, &seen).await {
                Ok(mut gap) => {
                    gap.extend(events);
                    events = gap;
                }
                Err(e) => out.errors.push(e),
            }
        }
        for ev in &events {
            let Some(id) = ev.get("event_id").and_then(Value::as_str) else {
                continue;
            };
            seen.insert(id.to_owned());
            if let Some((sender, seq)) = bench_tag(ev, &run) {
                counted.insert((sender, seq));
                out.arrivals.push(Arrival {
                    sender,
                    seq,
                    event_id: id.to_owned(),
                    at: now,
                });
            }
        }
        match body.get("next_batch").and_then(Value::as_str) {
            Some(t) => since = t.to_owned(),
            None => out.errors.push("/sync answer without next_batch".into()),
        }
    }
    out
}

/// `(limited, events, prev_batch)` of one joined room in a sync answer.
fn timeline_of<'a>(body: &'a Value, room_id: &str) -> (bool, &'a [Value], Option<String>) {
    let tl = &body["rooms"]["join"][room_id]["timeline"];
    (
        tl.get("limited").and_then(Value::as_bool).unwrap_or(false),
        tl.get("events")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]),
        tl.get("prev_batch")
            .and_then(Value::as_str)
            .map(str::to_owned),
    )
}

/// The `(sender, seq)` of a message this run sent, if `ev` is one.
pub fn bench_tag(ev: &Value, run: &str) -> Option<(usize, u64)> {
    if ev.get("type").and_then(Value::as_str) != Some("m.room.message") {
        return None;
    }
    let tag = ev.get("content")?.get("tsunagu_bench")?;
    if tag.get("run").and_then(Value::as_str) != Some(run) {
        return None;
    }
    Some((
        tag.get("sender")?.as_u64()? as usize,
        tag.get("seq")?.as_u64()?,
    ))
}

/// Events before `from` back to (not including) the newest one already `seen`, oldest first.
async fn backfill(
    hs: &Hs,
    token: &str,
    room_id: &str,
    from: &str,
    seen: &HashSet<String>,
) -> Result<Vec<Value>, String> {
    let mut gap = Vec::new();
    let mut from = from.to_owned();
    for _ in 0..10_000 {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100&from={}",
            enc(room_id),
            enc(&from)
        );
        let body = hs
            .get(&path, Some(token), Duration::from_secs(120))
            .await?
            .ok("/messages (gap fill)")?;
        let chunk = body
            .get("chunk")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for ev in &chunk {
            if ev
                .get("event_id")
                .and_then(Value::as_str)
                .is_some_and(|id| seen.contains(id))
            {
                gap.reverse();
                return Ok(gap);
            }
            gap.push(ev.clone());
        }
        match body.get("end").and_then(Value::as_str) {
            Some(end) if !chunk.is_empty() => from = end.to_owned(),
            _ => break,
        }
    }
    gap.reverse();
    Ok(gap)
}

/// Latency at rest: one message at a time into one room while a member long-polls `/sync`
/// for it. Each message is sent only after the previous one arrived, so nothing queues; this
/// is the delay a person notices in a quiet room (the load phase measures it under a queue).
/// `pause` is the quiet time before each send, so that the long poll is waiting when it
/// lands; with no pause the poll may arrive after the send (and answer at once), but the
/// server's threads never fall asleep: the difference is the cost of waking an idle server.
pub struct QuietLatency {
    /// Send request start → `event_id` answer, ms.
    pub send_ms: Vec<f64>,
    /// Send request start → the `/sync` answer that carries the event, ms.
    pub sync_ms: Vec<f64>,
    /// The receiver's last `next_batch`: the next phase continues from it, as a client does.
    /// (Starting a phase with a fresh initial sync would repeat an earlier request, and a
    /// server may answer a repeated `/sync` from its cache: Synapse keeps answers for 2 min.)
    pub since: String,
}

/// One pass of [`quiet_latency`].
pub struct QuietPass {
    /// Messages, one at a time.
    pub messages: usize,
    /// Quiet time before each send.
    pub pause: Duration,
    /// Where the receiver's `/sync` continues from (the previous pass's [`QuietLatency::since`]);
    /// `None` starts with an initial sync.
    pub since: Option<String>,
}

pub async fn quiet_latency(
    hs: &Hs,
    sender: &User,
    receiver_token: &str,
    room_id: &str,
    run: &str,
    pass: QuietPass,
) -> Result<QuietLatency, String> {
    let QuietPass {
        messages: n,
        pause,
        since,
    } = pass;
    let filter =
        enc(&json!({ "room": { "rooms": [room_id], "timeline": { "limit": 50 } } }).to_string());
    let mut since = match since {
        Some(since) => since,
        None => {
            let first = hs
                .get(
                    &format!("/_matrix/client/v3/sync?filter={filter}&timeout=0"),
                    Some(receiver_token),
                    Duration::from_secs(120),
                )
                .await?
                .ok("/sync before the quiet phase")?;
            next_batch(&first)?
        }
    };
    let mut send_ms = Vec::with_capacity(n);
    let mut sync_ms = Vec::with_capacity(n);
    for i in 0..n {
        // The long-poll is in place before the send starts (it waits up to 30 s).
        let poll = {
            let hs = hs.clone();
            let token = receiver_token.to_owned();
            let path = format!(
                "/_matrix/client/v3/sync?filter={filter}&timeout=30000&since={}",
                enc(&since)
            );
            tokio::spawn(async move { hs.get(&path, Some(&token), Duration::from_secs(60)).await })
        };
        tokio::time::sleep(pause).await;
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{run}-quiet-{i}",
            enc(room_id)
        );
        let body = json!({ "msgtype": "m.text", "body": format!("bench {run} quiet {i}") });
        let start = Instant::now();
        let sent = hs
            .call(
                Method::PUT,
                &path,
                Some(&sender.token),
                Some(&body),
                Duration::from_secs(60),
            )
            .await?
            .ok("quiet send")?;
        send_ms.push(start.elapsed().as_secs_f64() * 1e3);
        let event_id = sent
            .get("event_id")
            .and_then(Value::as_str)
            .ok_or("quiet send answered without event_id")?
            .to_owned();
        // The first answer normally carries the event; anything else (a receipt, a typing
        // notice) is followed by another bounded poll.
        let mut reply = poll.await.map_err(|e| format!("quiet poll task: {e}"))?;
        let mut polls = 0;
        loop {
            let body = reply?.ok("quiet /sync")?;
            let arrived = Instant::now();
            since = next_batch(&body)?;
            if timeline_of(&body, room_id)
                .1
                .iter()
                .any(|ev| ev.get("event_id").and_then(Value::as_str) == Some(&event_id))
            {
                sync_ms.push(arrived.duration_since(start).as_secs_f64() * 1e3);
                break;
            }
            polls += 1;
            if polls > 10 {
                return Err(format!("quiet message {event_id} never reached /sync"));
            }
            let path = format!(
                "/_matrix/client/v3/sync?filter={filter}&timeout=30000&since={}",
                enc(&since)
            );
            reply = hs
                .get(&path, Some(receiver_token), Duration::from_secs(60))
                .await;
        }
    }
    Ok(QuietLatency {
        send_ms,
        sync_ms,
        since,
    })
}

fn next_batch(body: &Value) -> Result<String, String> {
    body.get("next_batch")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "/sync answer without next_batch".to_owned())
}
