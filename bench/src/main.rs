//! `tsunagu-bench`: drives any Matrix homeserver through the Client-Server API and measures
//! message throughput, send and send→sync latency, sync and pagination times, server memory
//! and disk use, and checks that every message arrives exactly once and in order.
//!
//! ```sh
//! tsunagu-bench --url http://127.0.0.1:8008 --users 20 --rooms 5 --messages 2000 --concurrency 16 \
//!     --server-pid 1234 --data-dir /tmp/data --label tsunagu --json out.json
//! tsunagu-bench --table tsunagu.json synapse.json      # markdown table, side by side
//! ```
//! Exit status: 0 passed, 1 the run finished but failed its correctness checks, 2 error.

mod load;
mod matrix;
mod report;

use std::{
    collections::HashMap,
    future::Future,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use serde_json::{Value, json};
use tokio::{
    sync::{Semaphore, oneshot, watch},
    task::JoinSet,
    time::Instant,
};

use load::{Drain, SendPlan, SendRec, bench_tag};
use matrix::{Hs, User, enc};
use report::{dir_size, dist, proc_mem, round3};

#[derive(Parser, Debug)]
#[command(
    name = "tsunagu-bench",
    about = "Benchmark any Matrix homeserver through the Client-Server API"
)]
struct Args {
    /// Base URL of the homeserver, e.g. http://127.0.0.1:8008.
    #[arg(long, required_unless_present = "table")]
    url: Option<String>,
    /// Accounts to register (user i joins room i % rooms).
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Rooms to create (public_chat preset).
    #[arg(long, default_value_t = 5)]
    rooms: usize,
    /// Messages to send in total (ignored with --soak-secs).
    #[arg(long, default_value_t = 2000)]
    messages: u64,
    /// Requests in flight while registering, joining and sending.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Server process to sample memory of (VmRSS, VmHWM from /proc/PID/status).
    #[arg(long)]
    server_pid: Option<u32>,
    /// The server's data directory, to measure its size.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Registration token, for servers whose registration flow requires one.
    #[arg(long)]
    registration_token: Option<String>,
    /// Name of this server in the output.
    #[arg(long, default_value = "server")]
    label: String,
    /// Write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Send continuously for this many seconds instead of a fixed number of messages,
    /// printing a progress line every 60 s.
    #[arg(long)]
    soak_secs: Option<u64>,
    /// Stop sending after this many seconds even if fewer than --messages were sent (the run
    /// is then reported as incomplete, with what it measured).
    #[arg(long)]
    max_send_secs: Option<u64>,
    /// Seconds to wait after the run before reading the idle RSS (with --server-pid).
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Seconds receivers may take after the last send to see every message.
    #[arg(long, default_value_t = 120)]
    drain_secs: u64,
    /// Start-to-first-answer time measured by the caller, recorded in the result.
    #[arg(long)]
    startup_ms: Option<f64>,
    /// Only measure start-up: poll /_matrix/client/versions every millisecond until it
    /// answers and print the milliseconds since this Unix time in nanoseconds (the moment
    /// the caller started the server). Gives up after 120 s.
    #[arg(long)]
    probe_startup_ns: Option<u128>,
    /// Only print a markdown table of these result files side by side (Tsunagu first).
    #[arg(long, num_args = 1..)]
    table: Vec<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if !args.table.is_empty() {
        let mut results = Vec::new();
        for p in &args.table {
            match std::fs::read_to_string(p)
                .map_err(|e| e.to_string())
                .and_then(|s| serde_json::from_str::<Value>(&s).map_err(|e| e.to_string()))
            {
                Ok(v) => results.push(v),
                Err(e) => {
                    eprintln!("tsunagu-bench: {}: {e}", p.display());
                    return ExitCode::from(2);
                }
            }
        }
        print!("{}", report::table(&results));
        return ExitCode::SUCCESS;
    }
    let url = args.url.clone().unwrap_or_default();
    if let Some(ns) = args.probe_startup_ns {
        return match probe_startup(&url, ns).await {
            Ok(ms) => {
                println!("{ms:.1}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tsunagu-bench: {e}");
                ExitCode::from(2)
            }
        };
    }
    match run(args, url).await {
        Ok(result) => {
            if result["status"] == "passed" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("tsunagu-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// The path of simplified sliding sync (MSC4186) as matrix-rust-sdk calls it.
const SLIDING_SYNC: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// Times the first simplified-sliding-sync response for a room list of 20 rooms and for all
/// `n_rooms`, each five times on a fresh device, with the required state and timeline limit of
/// Element X's room list. A server without the endpoint (404) gives `null` and no problem.
async fn sliding_sync(hs: &Hs, user: &User, n_rooms: usize, problems: &mut Problems) -> Value {
    let mut out = json!({});
    for (key, window) in [
        ("first_20_rooms", 20usize.min(n_rooms)),
        ("all_rooms", n_rooms),
    ] {
        let body = json!({
            "conn_id": "room-list",
            "lists": { "all_rooms": {
                "ranges": [[0, window.saturating_sub(1)]],
                "timeline_limit": 1,
                "required_state": [
                    ["m.room.encryption", ""], ["m.room.member", "$LAZY"],
                    ["m.room.member", "$ME"], ["m.room.name", ""], ["m.room.topic", ""],
                    ["m.room.avatar", ""], ["m.room.canonical_alias", ""],
                    ["m.room.power_levels", ""], ["m.room.join_rules", ""],
                    ["m.room.history_visibility", ""], ["m.room.create", ""],
                    ["m.space.parent", "*"], ["m.room.pinned_events", ""]
                ],
            }},
            "extensions": {
                "account_data": { "enabled": true }, "receipts": { "enabled": true },
                "typing": { "enabled": true },
            },
        });
        let mut ms: Vec<f64> = Vec::new();
        let mut bytes = 0;
        for _ in 0..5 {
            let step = async {
                let tok = hs.login(user).await?;
                let r = hs
                    .call(
                        reqwest::Method::POST,
                        &format!("{SLIDING_SYNC}?timeout=0"),
                        Some(&tok),
                        Some(&body),
                        Duration::from_secs(300),
                    )
                    .await?;
                let took = r.received.as_secs_f64() * 1e3;
                if r.status == 404 {
                    return Ok(None);
                }
                let b = r.ok("sliding sync")?;
                let rooms = b["rooms"].as_object().map(|m| m.len()).unwrap_or(0);
                if rooms != window {
                    return Err(format!(
                        "sliding sync returned {rooms} rooms, expected {window}"
                    ));
                }
                Ok::<Option<(f64, usize)>, String>(Some((took, b.to_string().len())))
            };
            match step.await {
                Ok(Some((t, b))) => {
                    ms.push(t);
                    bytes = b;
                }
                Ok(None) => return Value::Null,
                Err(e) => {
                    problems.add(format!("sliding sync ({key}): {e}"));
                    break;
                }
            }
        }
        if !ms.is_empty() {
            out[key] = json!({ "rooms": window, "bytes": bytes, "ms": dist(&mut ms) });
        }
    }
    out
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

async fn probe_startup(url: &str, started_ns: u128) -> Result<f64, String> {
    let hs = Hs::new(url)?;
    let give_up = Instant::now() + Duration::from_secs(120);
    while Instant::now() < give_up {
        if let Ok(r) = hs
            .get("/_matrix/client/versions", None, Duration::from_secs(5))
            .await
            && r.status == 200
            && r.body.get("versions").is_some()
        {
            return Ok((unix_ns().saturating_sub(started_ns)) as f64 / 1e6);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(format!(
        "{url}/_matrix/client/versions did not answer within 120 s"
    ))
}

/// Runs `f(0..n)` with at most `limit` in flight; results in index order.
async fn bounded<T, F, Fut>(limit: usize, n: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let sem = Arc::new(Semaphore::new(limit.max(1)));
    let mut set = JoinSet::new();
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore open");
        let fut = f(i);
        set.spawn(async move {
            let r = fut.await;
            drop(permit);
            (i, r)
        });
    }
    let mut out: Vec<(usize, T)> = set.join_all().await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

fn secs(d: Duration) -> f64 {
    round3(d.as_secs_f64())
}

/// Collects problems: every one is counted, the first 50 are kept verbatim.
#[derive(Default)]
struct Problems {
    list: Vec<String>,
    count: usize,
}
impl Problems {
    fn add(&mut self, p: String) {
        self.count += 1;
        if self.list.len() < 50 {
            self.list.push(p);
        }
    }
}

/// Messages sent one at a time, after the load, for the latency a quiet room sees.
const QUIET_MESSAGES: usize = 100;

async fn run(args: Args, url: String) -> Result<Value, String> {
    if args.users == 0 || args.rooms == 0 || args.concurrency == 0 {
        return Err("--users, --rooms and --concurrency must be at least 1".into());
    }
    let hs = Hs::new(&url)?;
    let run_id = format!(
        "{:x}",
        (unix_ns() as u64 ^ (std::process::id() as u64) << 40) & 0xff_ffff_ffff
    );
    let run_id = format!("b{}", &run_id[run_id.len().saturating_sub(8)..]);
    let n_users = args.users;
    let n_rooms = args.rooms;
    let conc = args.concurrency;
    let mut problems = Problems::default();
    eprintln!(
        "[{}] run {run_id} against {url}: {n_users} users, {n_rooms} rooms, {}, concurrency {conc}",
        args.label,
        args.soak_secs
            .map(|s| format!("soak {s} s"))
            .unwrap_or_else(|| format!("{} messages", args.messages)),
    );

    let versions = hs
        .get("/_matrix/client/versions", None, Duration::from_secs(10))
        .await?
        .ok("GET /_matrix/client/versions")?;
    let server_versions = versions.get("versions").cloned().unwrap_or(Value::Null);
    let rss_at_start = args.server_pid.and_then(proc_mem).map(|m| m.rss);

    // Accounts.
    let t = Instant::now();
    let users: Vec<Result<User, String>> = bounded(conc, n_users, |i| {
        let hs = hs.clone();
        let token = args.registration_token.clone();
        let name = format!("{run_id}_u{i}");
        let password = format!("pw-{run_id}-{i}");
        async move { hs.register(&name, &password, token.as_deref()).await }
    })
    .await;
    let users: Vec<User> = users.into_iter().collect::<Result<_, _>>()?;
    let register_s = t.elapsed();
    eprintln!(
        "[{}] registered {n_users} users in {:.2} s",
        args.label,
        register_s.as_secs_f64()
    );
    let users = Arc::new(users);

    // Rooms: room r is created by user r % N; user i joins room i % R; user 0 joins all.
    let t = Instant::now();
    let creator = |r: usize| r % n_users;
    let rooms: Vec<Result<String, String>> = bounded(conc, n_rooms, |r| {
        let hs = hs.clone();
        let u = users[creator(r)].clone();
        let name = format!("bench {run_id} room {r}");
        async move { hs.create_room(&u, &name).await }
    })
    .await;
    let rooms: Vec<String> = rooms.into_iter().collect::<Result<_, _>>()?;
    let create_rooms_s = t.elapsed();
    let rooms = Arc::new(rooms);
    let mut joins: Vec<(usize, usize)> = Vec::new();
    for r in 0..n_rooms {
        let mut members: Vec<usize> = (0..n_users).filter(|i| i % n_rooms == r).collect();
        members.push(0);
        members.sort_unstable();
        members.dedup();
        joins.extend(
            members
                .into_iter()
                .filter(|&u| u != creator(r))
                .map(|u| (u, r)),
        );
    }
    let t = Instant::now();
    let joined: Vec<Result<(), String>> = bounded(conc, joins.len(), |j| {
        let hs = hs.clone();
        let (u, r) = joins[j];
        let user = users[u].clone();
        let room = rooms[r].clone();
        async move { hs.join(&user, &room).await }
    })
    .await;
    joined.into_iter().collect::<Result<Vec<()>, _>>()?;
    let join_s = t.elapsed();
    eprintln!(
        "[{}] created {n_rooms} rooms in {:.2} s, {} joins in {:.2} s",
        args.label,
        create_rooms_s.as_secs_f64(),
        joins.len(),
        join_s.as_secs_f64()
    );

    // Receivers: the creator of each room long-polls /sync for it.
    let (ctl_tx, ctl_rx) = watch::channel::<Drain>(None);
    let mut receivers = Vec::new();
    let mut readies = Vec::new();
    for r in 0..n_rooms {
        let (tx, rx) = oneshot::channel();
        readies.push(rx);
        receivers.push(tokio::spawn(load::receiver(
            hs.clone(),
            users[creator(r)].token.clone(),
            r,
            rooms[r].clone(),
            run_id.clone(),
            tx,
            ctl_rx.clone(),
        )));
    }
    for rx in readies {
        match tokio::time::timeout(Duration::from_secs(300), rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(format!("receiver could not start: {e}")),
            _ => return Err("receiver did not start within 300 s".into()),
        }
    }

    let data_dir = args.data_dir.clone();
    let size_of = |d: Option<PathBuf>| async move {
        match d {
            Some(d) => tokio::task::spawn_blocking(move || dir_size(&d)).await.ok(),
            None => None,
        }
    };
    let bytes_before = size_of(data_dir.clone()).await;
    let rss_before = args.server_pid.and_then(proc_mem).map(|m| m.rss);
    let server_cpu = || {
        args.server_pid
            .and_then(|p| report::proc_cpu_secs(&p.to_string()))
    };
    let client_cpu = || report::proc_cpu_secs("self");
    let cpu_before = (server_cpu(), client_cpu());

    // Senders.
    let plan = Arc::new(SendPlan {
        hs: hs.clone(),
        run: run_id.clone(),
        users: users.clone(),
        rooms: rooms.clone(),
        next: AtomicU64::new(0),
        limit: if args.soak_secs.is_some() {
            None
        } else {
            Some(args.messages)
        },
        stop: AtomicBool::new(false),
        done: AtomicU64::new(0),
        unanswered_in_a_row: AtomicU64::new(0),
        aborted: Default::default(),
    });
    // Memory sampler: every 100 ms during the load phase; a vanished server ends the run.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = args.server_pid.map(|pid| {
        let sampling = sampling.clone();
        let plan = plan.clone();
        tokio::spawn(async move {
            let mut peak = 0u64;
            let mut alive = true;
            while sampling.load(Ordering::Relaxed) {
                match proc_mem(pid) {
                    Some(m) => peak = peak.max(m.rss),
                    None => {
                        if alive {
                            plan.abort(format!("server process {pid} is gone"));
                        }
                        alive = false;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (peak, alive)
        })
    });

    let workers = conc.min(n_users);
    if workers < conc {
        eprintln!(
            "[{}] note: only {workers} senders can be in flight (one request per user at a time)",
            args.label
        );
    }
    eprintln!("[{}] sending…", args.label);
    let send_t0 = Instant::now();
    let mut worker_handles = Vec::new();
    for w in 0..workers {
        let senders: Vec<usize> = (0..n_users).filter(|s| s % workers == w).collect();
        worker_handles.push(tokio::spawn(load::worker(plan.clone(), senders)));
    }
    // Fixed runs: a progress line every 30 s, and the --max-send-secs budget.
    let progress = if args.soak_secs.is_none() {
        let plan = plan.clone();
        let label = args.label.clone();
        let total = args.messages;
        let budget = args.max_send_secs.map(|s| send_t0 + Duration::from_secs(s));
        Some(tokio::spawn(async move {
            let mut last = (send_t0, 0u64);
            let mut hit_budget = false;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let done = plan.done.load(Ordering::Relaxed);
                if plan.stop.load(Ordering::Relaxed) || done >= total {
                    break;
                }
                let now = Instant::now();
                if budget.is_some_and(|b| now >= b) {
                    eprintln!(
                        "[{label}] send budget reached: stopping after {done} of {total} messages"
                    );
                    hit_budget = true;
                    plan.stop.store(true, Ordering::Relaxed);
                    break;
                }
                if now.duration_since(last.0) >= Duration::from_secs(30) {
                    let eps = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                    eprintln!(
                        "[{label}] {:>5} s: sent {done} of {total} ({eps:.0} events/s over the last 30 s)",
                        now.duration_since(send_t0).as_secs()
                    );
                    last = (now, done);
                }
            }
            hit_budget
        }))
    } else {
        None
    };
    // Soak: stop after the time, a progress line every 60 s.
    let mut soak_lines = Vec::new();
    if let Some(soak) = args.soak_secs {
        let end = send_t0 + Duration::from_secs(soak);
        let mut last_done = 0u64;
        let mut tick = send_t0;
        loop {
            let next_tick = (tick + Duration::from_secs(60)).min(end);
            while Instant::now() < next_tick && !plan.stop.load(Ordering::Relaxed) {
                tokio::time::sleep_until(next_tick.min(Instant::now() + Duration::from_secs(1)))
                    .await;
            }
            if plan.stop.load(Ordering::Relaxed) {
                break;
            }
            let done = plan.done.load(Ordering::Relaxed);
            let span = next_tick.duration_since(tick).as_secs_f64().max(1e-3);
            let eps = (done - last_done) as f64 / span;
            let rss = args.server_pid.and_then(proc_mem).map(|m| m.rss);
            let bytes = size_of(data_dir.clone()).await;
            let elapsed = next_tick.duration_since(send_t0).as_secs();
            eprintln!(
                "[{}] soak {elapsed:>6} s  rss {}  {eps:>8.0} events/s this minute  data dir {}  sent {done}",
                args.label,
                rss.map(|k| report::mib(k as f64, true))
                    .unwrap_or_else(|| "n/a".into()),
                bytes
                    .map(|b| report::mib(b as f64, false))
                    .unwrap_or_else(|| "n/a".into()),
            );
            soak_lines.push(json!({
                "elapsed_s": elapsed, "rss_kib": rss, "events_per_s": round3(eps),
                "data_dir_bytes": bytes, "sent": done,
            }));
            last_done = done;
            tick = next_tick;
            if next_tick >= end {
                break;
            }
        }
        plan.stop.store(true, Ordering::Relaxed);
    }
    let mut sends: Vec<SendRec> = Vec::new();
    for h in worker_handles {
        sends.extend(h.await.map_err(|e| format!("sender task: {e}"))?);
    }
    let send_elapsed = send_t0.elapsed();
    let send_end = Instant::now();
    let truncated = match progress {
        Some(h) => {
            plan.stop.store(true, Ordering::Relaxed);
            h.await.unwrap_or(false)
        }
        None => false,
    };
    eprintln!(
        "[{}] sent {} messages in {:.2} s; waiting for receivers",
        args.label,
        sends.len(),
        send_elapsed.as_secs_f64()
    );

    let aborted = plan
        .aborted
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();

    // Drain: each receiver stops once it has every message its room was sent.
    let mut expected = vec![0usize; n_rooms];
    for s in sends.iter().filter(|s| s.event_id.is_some()) {
        expected[s.room] += 1;
    }
    let drain = if aborted.is_some() {
        5
    } else {
        args.drain_secs
    };
    ctl_tx
        .send(Some((
            Arc::new(expected.clone()),
            Instant::now() + Duration::from_secs(drain),
        )))
        .map_err(|_| "receivers gone".to_string())?;
    let mut recv = Vec::new();
    for h in receivers {
        recv.push(h.await.map_err(|e| format!("receiver task: {e}"))?);
    }
    drop(ctl_tx);
    let load_wall = send_t0.elapsed();
    let cpu_after = (server_cpu(), client_cpu());
    sampling.store(false, Ordering::Relaxed);
    let (peak_rss, server_alive) = match sampler {
        Some(h) => {
            let (p, a) = h.await.map_err(|e| format!("sampler: {e}"))?;
            (Some(p), a)
        }
        None => (None, true),
    };
    if let Some(why) = &aborted {
        problems.add(format!("run stopped early: {why}"));
    } else if !server_alive {
        problems.add("the server process disappeared during the load phase".into());
    }
    let bytes_after_load = size_of(data_dir.clone()).await;

    // Correctness: every acknowledged message exactly once, in its room, per sender in order.
    let mut sent_ok: HashMap<(usize, u64), (usize, &str, Instant)> = HashMap::new();
    let mut send_failed: HashMap<(usize, u64), &str> = HashMap::new();
    let mut send_lat: Vec<f64> = Vec::with_capacity(sends.len());
    for s in &sends {
        send_lat.push(s.latency.as_secs_f64() * 1e3);
        match (&s.event_id, &s.error) {
            (Some(id), _) => {
                sent_ok.insert((s.sender, s.seq), (s.room, id.as_str(), s.start));
            }
            (None, e) => {
                let e = e.as_deref().unwrap_or("?");
                send_failed.insert((s.sender, s.seq), e);
                if send_failed.len() <= 5 {
                    problems.add(format!(
                        "send failed: user {} room {} seq {}: {e}",
                        users[s.sender].user_id, rooms[s.room], s.seq
                    ));
                }
            }
        }
    }
    if send_failed.len() > 5 {
        problems.add(format!("{} more sends failed", send_failed.len() - 5));
    }
    let (mut lost, mut dups, mut reordered, mut unexpected, mut wrong_id, mut received) =
        (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    let mut first_arrival: HashMap<(usize, u64), Instant> = HashMap::new();
    let mut last_arrival: Option<Instant> = None;
    let mut limited_gaps = 0;
    let mut syncs = 0;
    for (r, rr) in recv.iter().enumerate() {
        limited_gaps += rr.limited_gaps;
        syncs += rr.syncs;
        for e in rr.errors.iter().take(3) {
            problems.add(format!("receiver of room {}: {e}", rooms[r]));
        }
        if rr.errors.len() > 3 {
            problems.add(format!(
                "receiver of room {}: {} more /sync errors",
                rooms[r],
                rr.errors.len() - 3
            ));
        }
        if rr.timed_out {
            problems.add(format!(
                "receiver of room {} timed out {} s after the last send with {} of {} messages",
                rooms[r],
                drain,
                rr.arrivals.len(),
                expected[r]
            ));
        }
        let mut last_seq: HashMap<usize, u64> = HashMap::new();
        for a in &rr.arrivals {
            let key = (a.sender, a.seq);
            last_arrival = Some(last_arrival.map_or(a.at, |l: Instant| l.max(a.at)));
            match sent_ok.get(&key) {
                None => {
                    unexpected += 1;
                    problems.add(format!(
                        "room {}: message from {} seq {} ({}) arrived but its send {}",
                        rooms[r],
                        users[a.sender.min(n_users - 1)].user_id,
                        a.seq,
                        a.event_id,
                        send_failed
                            .get(&key)
                            .map(|e| format!("failed: {e}"))
                            .unwrap_or_else(|| "was never made".into())
                    ));
                    continue;
                }
                Some((room, id, _)) => {
                    if *room != r {
                        unexpected += 1;
                        problems.add(format!(
                            "message {} from {} seq {} arrived in room {} but was sent to {}",
                            a.event_id, users[a.sender].user_id, a.seq, rooms[r], rooms[*room]
                        ));
                        continue;
                    }
                    if *id != a.event_id {
                        wrong_id += 1;
                        problems.add(format!(
                            "room {}: {} seq {} arrived as {} but the send answered {id}",
                            rooms[r], users[a.sender].user_id, a.seq, a.event_id
                        ));
                    }
                }
            }
            if first_arrival.contains_key(&key) {
                dups += 1;
                problems.add(format!(
                    "room {}: {} seq {} ({}) delivered more than once",
                    rooms[r], users[a.sender].user_id, a.seq, a.event_id
                ));
                continue;
            }
            first_arrival.insert(key, a.at);
            received += 1;
            if let Some(&prev) = last_seq.get(&a.sender)
                && a.seq < prev
            {
                reordered += 1;
                problems.add(format!(
                    "room {}: {} seq {} ({}) arrived after seq {prev}",
                    rooms[r], users[a.sender].user_id, a.seq, a.event_id
                ));
            }
            let e = last_seq.entry(a.sender).or_insert(a.seq);
            *e = (*e).max(a.seq);
        }
    }
    let mut delivery: Vec<f64> = Vec::with_capacity(sent_ok.len());
    let mut missing: Vec<_> = Vec::new();
    for (key, (room, id, start)) in &sent_ok {
        match first_arrival.get(key) {
            Some(at) => delivery.push(at.saturating_duration_since(*start).as_secs_f64() * 1e3),
            None => {
                lost += 1;
                missing.push((*room, key.0, key.1, *id));
            }
        }
    }
    missing.sort_unstable();
    for (room, sender, seq, id) in missing {
        problems.add(format!(
            "lost: {} seq {} ({id}) in room {} was acknowledged but never reached the room's /sync",
            users[sender].user_id, seq, rooms[room]
        ));
    }
    let n_sent = sends.len() as u64;
    let n_ok = sent_ok.len() as u64;
    let throughput = n_ok as f64 / send_elapsed.as_secs_f64();
    let delivered_span = last_arrival
        .map(|l| l.max(send_end).duration_since(send_t0))
        .unwrap_or(send_elapsed);
    let delivered_eps = received as f64 / delivered_span.as_secs_f64();
    eprintln!(
        "[{}] {n_ok} acknowledged, {received} received, {lost} lost, {dups} duplicated, {reordered} reordered",
        args.label
    );

    // Sync and pagination timings (skipped when the run was cut short).
    let (initial_sync, sliding_sync, mut noop, pagination, quiet) = if aborted.is_none() {
        // Initial sync of the user who is in every room.
        let u0 = users[0].clone();
        let initial = hs
            .get(
                "/_matrix/client/v3/sync?timeout=0",
                Some(&u0.token),
                Duration::from_secs(300),
            )
            .await;
        let initial_sync = match initial {
            Ok(r) if r.status == 200 => {
                let initial_ms = r.received.as_secs_f64() * 1e3;
                let rooms_in = r.body["rooms"]["join"]
                    .as_object()
                    .map(|m| m.len())
                    .unwrap_or(0);
                if rooms_in != n_rooms {
                    problems.add(format!(
                        "initial sync of {} lists {rooms_in} joined rooms, expected {n_rooms}",
                        u0.user_id
                    ));
                }
                json!({ "ms": round3(initial_ms), "bytes": r.bytes, "rooms": rooms_in })
            }
            Ok(r) => {
                problems.add(format!(
                    "initial sync: HTTP {}: {}",
                    r.status,
                    matrix::short(&r.body)
                ));
                Value::Null
            }
            Err(e) => {
                problems.add(format!("initial sync: {e}"));
                Value::Null
            }
        };

        // Initial sync again on 5 fresh devices of user 0, now that the server has served the
        // account once: what a second device logging in waits.
        let mut warm: Vec<f64> = Vec::new();
        for _ in 0..5 {
            let step = async {
                let tok = hs.login(&u0).await?;
                let r = hs
                    .get(
                        "/_matrix/client/v3/sync?timeout=0",
                        Some(&tok),
                        Duration::from_secs(300),
                    )
                    .await?;
                let ms = r.received.as_secs_f64() * 1e3;
                r.ok("initial sync on a fresh device")?;
                Ok::<f64, String>(ms)
            };
            match step.await {
                Ok(ms) => warm.push(ms),
                Err(e) => {
                    problems.add(format!("warm initial sync: {e}"));
                    break;
                }
            }
        }
        let initial_sync = if initial_sync.is_object() && !warm.is_empty() {
            let mut s = initial_sync;
            s["warm_ms"] = dist(&mut warm);
            s
        } else {
            initial_sync
        };

        // Simplified sliding sync (MSC4186), as Element X's room list starts: the first
        // response for a list of the 20 most recent rooms, and one for every room, each on a
        // fresh device (a new connection).
        let sliding = sliding_sync(&hs, &u0, n_rooms, &mut problems).await;

        // Incremental no-op sync: 20 fresh devices of user 0 (so no answer cache is shared),
        // each syncs once for its token, then the timed sync since it with timeout=0.
        let f1 = enc(&json!({ "room": { "timeline": { "limit": 1 } } }).to_string());
        let mut noop: Vec<f64> = Vec::new();
        for i in 0..20 {
            let step = async {
                let tok = hs.login(&u0).await?;
                let body = hs
                    .get(
                        &format!("/_matrix/client/v3/sync?filter={f1}&timeout=0"),
                        Some(&tok),
                        Duration::from_secs(300),
                    )
                    .await?
                    .ok("sync for a token")?;
                let since = body
                    .get("next_batch")
                    .and_then(Value::as_str)
                    .ok_or("sync without next_batch")?
                    .to_owned();
                let t = Instant::now();
                hs.get(
                    &format!(
                        "/_matrix/client/v3/sync?filter={f1}&timeout=0&since={}",
                        enc(&since)
                    ),
                    Some(&tok),
                    Duration::from_secs(60),
                )
                .await?
                .ok("no-op incremental sync")?;
                Ok::<f64, String>(t.elapsed().as_secs_f64() * 1e3)
            };
            match step.await {
                Ok(ms) => noop.push(ms),
                Err(e) => {
                    problems.add(format!("incremental sync measurement {i}: {e}"));
                    break;
                }
            }
        }

        // /messages: walk room 0's whole history backwards, 100 events a page.
        let t = Instant::now();
        let mut pages = 0u64;
        let mut events = 0u64;
        let mut history: Vec<(usize, u64)> = Vec::new();
        let mut from: Option<String> = None;
        let mut pag_err = None;
        for _ in 0..100_000 {
            let path = format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100{}",
                enc(&rooms[0]),
                from.as_deref()
                    .map(|f| format!("&from={}", enc(f)))
                    .unwrap_or_default()
            );
            let body = match hs
                .get(&path, Some(&u0.token), Duration::from_secs(120))
                .await
                .and_then(|r| r.ok("/messages"))
            {
                Ok(b) => b,
                Err(e) => {
                    pag_err = Some(e);
                    break;
                }
            };
            pages += 1;
            let chunk = body
                .get("chunk")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            events += chunk.len() as u64;
            history.extend(chunk.iter().filter_map(|e| bench_tag(e, &run_id)));
            match body.get("end").and_then(Value::as_str) {
                Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
                _ => break,
            }
        }
        let pag_ms = t.elapsed().as_secs_f64() * 1e3;
        if let Some(e) = pag_err {
            problems.add(format!("pagination: {e}"));
        }
        // The history must hold each of room 0's messages once, newest first per sender.
        let room0_sent = expected[0];
        let distinct: std::collections::HashSet<_> = history.iter().collect();
        if history.len() != room0_sent || distinct.len() != room0_sent {
            problems.add(format!(
                "/messages history of room {} holds {} benchmark messages ({} distinct), {room0_sent} were acknowledged",
                rooms[0],
                history.len(),
                distinct.len()
            ));
        }
        let mut newest: HashMap<usize, u64> = HashMap::new();
        let mut hist_order_errors = 0;
        for (s, q) in &history {
            if let Some(&prev) = newest.get(s)
                && *q > prev
            {
                hist_order_errors += 1;
            }
            newest.insert(*s, *q);
        }
        if hist_order_errors > 0 {
            problems.add(format!(
                "/messages history of room {} has {hist_order_errors} messages out of per-sender order",
                rooms[0]
            ));
        }
        let pagination = json!({
            "room": rooms[0], "pages": pages, "events": events,
            "total_ms": round3(pag_ms),
            "events_per_s": round3(events as f64 / (pag_ms / 1e3)),
        });
        // Latency at rest: 100 messages one at a time into room 0, after the load.
        let quiet_sender = if n_users > n_rooms { n_rooms } else { 0 };
        let mut quiet = json!({});
        let mut since = None;
        // At rest: 20 ms of quiet before each send. Back to back: none, so the server's
        // threads never sleep; the difference is what waking an idle server costs.
        for (phase, pause, prefix) in [
            ("at rest", Duration::from_millis(20), ""),
            ("back to back", Duration::ZERO, "hot_"),
        ] {
            match load::quiet_latency(
                &hs,
                &users[quiet_sender],
                &u0.token,
                &rooms[0],
                &format!("{run_id}-{prefix}"),
                load::QuietPass {
                    messages: QUIET_MESSAGES,
                    pause,
                    since: since.take(),
                },
            )
            .await
            {
                Ok(mut q) => {
                    since = Some(q.since);
                    quiet[format!("{prefix}send_ms")] = dist(&mut q.send_ms);
                    quiet[format!("{prefix}sync_ms")] = dist(&mut q.sync_ms);
                }
                Err(e) => problems.add(format!("{phase} latency: {e}")),
            }
        }
        (initial_sync, sliding, noop, pagination, quiet)
    } else {
        (
            Value::Null,
            Value::Null,
            Vec::new(),
            Value::Null,
            Value::Null,
        )
    };

    // Idle memory after a quiet minute.
    let bytes_idle_wait;
    let memory = match args.server_pid {
        Some(pid) => {
            let idle_secs = if aborted.is_some() { 0 } else { args.idle_secs };
            eprintln!("[{}] waiting {idle_secs} s for idle memory…", args.label);
            tokio::time::sleep(Duration::from_secs(idle_secs)).await;
            let m = proc_mem(pid);
            if m.is_none() {
                problems.add(format!(
                    "server process {pid} is gone at the end of the run"
                ));
            }
            bytes_idle_wait = size_of(data_dir.clone()).await;
            json!({
                "pid": pid,
                "rss_at_start_kib": rss_at_start,
                "rss_before_load_kib": rss_before,
                "peak_rss_kib": peak_rss,
                "vmhwm_kib": m.map(|m| m.hwm),
                "idle_rss_kib": m.map(|m| m.rss),
                "idle_rss_anon_kib": m.map(|m| m.anon),
                "idle_rss_file_kib": m.map(|m| m.file),
                "idle_after_s": args.idle_secs,
            })
        }
        None => {
            bytes_idle_wait = size_of(data_dir.clone()).await;
            Value::Null
        }
    };
    let disk = match (bytes_before, bytes_after_load, bytes_idle_wait) {
        (Some(b0), Some(b1), Some(b2)) => json!({
            "data_dir": data_dir.as_ref().map(|d| d.display().to_string()),
            "bytes_before_load": b0,
            "bytes_after_load": b1,
            "bytes_at_end": b2,
            "messages_stored": n_ok,
            "bytes_per_message": round3(b2 as f64 / n_ok.max(1) as f64),
            "growth_bytes_per_message": round3((b2 as f64 - b0 as f64) / n_ok.max(1) as f64),
        }),
        _ => Value::Null,
    };

    let cpu = match (cpu_before, cpu_after) {
        ((s0, Some(c0)), (s1, Some(c1))) => json!({
            "wall_s": secs(load_wall),
            "server_s": s0.zip(s1).map(|(a, b)| round3(b - a)),
            "server_ms_per_message": s0.zip(s1).map(|(a, b)| round3((b - a) * 1e3 / n_ok.max(1) as f64)),
            "client_s": round3(c1 - c0),
        }),
        _ => Value::Null,
    };
    let rate_limited = hs.rate_limited.load(Ordering::Relaxed);
    let status = if problems.count == 0 {
        "passed"
    } else {
        "FAILED"
    };
    let result = json!({
        "label": args.label,
        "url": url,
        "run_id": run_id,
        "status": status,
        "problem_count": problems.count,
        "problems": problems.list,
        "server_versions": server_versions,
        "startup_ms": args.startup_ms,
        "config": {
            "users": n_users, "rooms": n_rooms, "messages": args.messages,
            "concurrency": conc, "senders_in_flight": workers, "soak_secs": args.soak_secs,
            "max_send_secs": args.max_send_secs,
        },
        "complete": !truncated && aborted.is_none(),
        "setup": {
            "register_s": secs(register_s),
            "register_per_s": round3(n_users as f64 / register_s.as_secs_f64()),
            "create_rooms_s": secs(create_rooms_s),
            "joins": joins.len(),
            "join_s": secs(join_s),
        },
        "send": {
            "count": n_sent, "ok": n_ok, "failed": n_sent - n_ok,
            "duration_s": secs(send_elapsed),
            "throughput_eps": round3(throughput),
            "latency_ms": dist(&mut send_lat),
            "rate_limited_retries": rate_limited,
        },
        "delivery": {
            "received": received,
            "throughput_eps": round3(delivered_eps),
            "latency_ms": dist(&mut delivery),
            "sync_requests": syncs,
            "limited_gaps": limited_gaps,
        },
        "correctness": {
            "acknowledged": n_ok, "received": received, "lost": lost, "duplicates": dups,
            "reordered": reordered, "unexpected": unexpected, "wrong_event_id": wrong_id,
        },
        "initial_sync": initial_sync,
        "sliding_sync": sliding_sync,
        "incremental_sync_ms": dist(&mut noop),
        "pagination": pagination,
        "quiet": quiet,
        "cpu": cpu,
        "memory": memory,
        "disk": disk,
        "soak": soak_lines,
    });
    print!("{}", report::summary(&result));
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&result).unwrap_or_default())
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(result)
}
