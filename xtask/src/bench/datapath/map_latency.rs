//! Map update latency, "etcd event → BPF map updated": a second ebpf-mode agent (its own child
//! cgroup, location `lat`, proxy `lat1`) follows leader records that the bench writes for `lat`
//! as a manager does: key `leader/lat`, a `LeaderRecord` naming a fake address in 198.18.0.0/15
//! (no lease). Nothing ever connects to those: no client uses that agent and its readiness
//! probe, which would, is never asked.
//!
//! Each update deletes the key and waits until the agent has cleared its entry in the pinned
//! `HARP_LEADERS` map, then puts the key anew, so that its fencing token (`create_revision`) is
//! the put's revision. One sample: from just before the put is sent until the map entry names
//! the new address (read back in a loop while the put is in flight), checked to carry that token.
//!
//! Plaintext and TLS + users etcd are measured side by side: two clusters of the same shape,
//! an agent each, updates alternating between them.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aya::maps::{HashMap, Map, MapData, MapError};
use harp_common::leaders::{self, Backend, ServiceKey};
use harp_core::keys::Keys;
use harp_core::records::{LeaderRecord, RECORD_VERSION};
use harp_tests::TestCluster;
use serde::Serialize;

use super::super::stats::nearest_rank;
use super::kernel::KernelAgent;
use super::round_to;

/// Measured updates (after one that waits for the agent's etcd session).
pub const UPDATES: usize = 200;
const LOCATION: &str = "lat";
const PROXY: &str = "lat1";
const TARGET_P99_MS: f64 = 5.0;
const UPDATE_TIMEOUT: Duration = Duration::from_secs(5);
/// The agent routes only once in contact with etcd: the first update may wait for that.
const FIRST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two reads of the map, leaving the CPU to etcd and the agent.
const POLL: Duration = Duration::from_micros(20);

#[derive(Serialize)]
pub struct MapLatency {
    /// Whether the agent's etcd link was TLS with a client certificate and an etcd user.
    pub etcd_tls: bool,
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
    target_p99: f64,
    met: bool,
    /// For comparison: from the same instant until the put's response arrived (etcd's commit).
    put_p50: f64,
    put_p99: f64,
    /// On the TLS measurement: its p50 and p99 ÷ the plaintext one's, measured alternately.
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_vs_plaintext: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_vs_plaintext: Option<f64>,
}

impl MapLatency {
    /// The markdown's line.
    pub fn line(&self) -> String {
        format!(
            "Map update latency{} (etcd put → `HARP_LEADERS` entry with the new token, {} \
             updates): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (target p99 ≤ {} ms: {}); \
             the put's own response took p50 {:.3} ms, p99 {:.3} ms{}.\n",
            match self.etcd_tls {
                true => ", etcd over TLS with a client certificate and a user",
                false => ", plaintext etcd",
            },
            self.n,
            self.p50,
            self.p99,
            self.max,
            self.target_p99,
            if self.met { "yes" } else { "**no**" },
            self.put_p50,
            self.put_p99,
            match (self.p50_vs_plaintext, self.p99_vs_plaintext) {
                (Some(a), Some(b)) =>
                    format!("; ÷ plaintext (measured alternately): p50 {a}, p99 {b}"),
                _ => String::new(),
            },
        )
    }
}

/// The map update latency on `cluster` (plaintext etcd) and on a cluster of the same shape
/// (as many etcd members) whose etcd serves TLS with client certificates and users, the agent
/// connecting as its own user: both agents run at once and the updates alternate between them
/// (which goes first alternates too), so both see the same machine.
pub fn run_plain_and_tls(cluster: &TestCluster) -> anyhow::Result<(MapLatency, MapLatency)> {
    println!("starting a cluster with etcd over TLS and users for the map update latency");
    let secure = TestCluster::builder("benchtls")
        .etcd_members(cluster.etcd.size())
        .secure_etcd()
        .node("t1", "dca", 100)
        .start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let plain_agent = start_agent(cluster)?;
    let tls_agent = start_agent(&secure)?;
    let mut plain = Probe::new(&rt, cluster, &plain_agent)?;
    let mut tls = Probe::new(&rt, &secure, &tls_agent)?;
    let context = |a: &KernelAgent| format!("map update latency\n{}", a.log_tail(30));
    for i in 0..=UPDATES {
        let first = i == 0;
        if i % 2 == 0 {
            plain.update(first).with_context(|| context(&plain_agent))?;
            tls.update(first).with_context(|| context(&tls_agent))?;
        } else {
            tls.update(first).with_context(|| context(&tls_agent))?;
            plain.update(first).with_context(|| context(&plain_agent))?;
        }
    }
    let plain = plain.summary(false);
    let mut tls = tls.summary(true);
    tls.p50_vs_plaintext = Some(round_to(tls.p50 / plain.p50, 2));
    tls.p99_vs_plaintext = Some(round_to(tls.p99 / plain.p99, 2));
    print!("{}{}", plain.line(), tls.line());
    Ok((plain, tls))
}

/// The `lat1` agent of `cluster`, following location [`LOCATION`].
fn start_agent(cluster: &TestCluster) -> anyhow::Result<KernelAgent> {
    println!(
        "map update latency: harp-agent {PROXY} of {} (mode ebpf, location {LOCATION})",
        cluster.name()
    );
    match KernelAgent::start(cluster, PROXY, LOCATION, false)? {
        Ok(a) => Ok(a),
        Err(reason) => bail!("harp-agent {PROXY}: {reason}"),
    }
}

/// One cluster's measurement: its agent's pinned `HARP_LEADERS`, an etcd client, the samples.
struct Probe<'a> {
    rt: &'a tokio::runtime::Runtime,
    map: Map,
    service: ServiceKey,
    client: etcd_client::Client,
    key: String,
    n: usize,
    /// The latency of each measured update, and of its put's response, in ms.
    samples: Vec<f64>,
    puts: Vec<f64>,
}

impl<'a> Probe<'a> {
    fn new(
        rt: &'a tokio::runtime::Runtime,
        cluster: &TestCluster,
        agent: &KernelAgent,
    ) -> anyhow::Result<Probe<'a>> {
        let pin = agent.pin_dir().join(leaders::NAME);
        let data = MapData::from_pin(&pin).with_context(|| format!("open {}", pin.display()))?;
        Ok(Probe {
            rt,
            map: Map::from_map_data(data)?,
            service: ServiceKey::new(SocketAddrV4::new(Ipv4Addr::LOCALHOST, agent.listen_port())),
            client: rt.block_on(cluster.client()),
            key: Keys::new(cluster.name()).leader(LOCATION),
            n: 0,
            samples: Vec::with_capacity(UPDATES),
            puts: Vec::with_capacity(UPDATES),
        })
    }

    fn entry(&self) -> anyhow::Result<Option<Backend>> {
        // Borrowed: a view that cannot write the map.
        let leaders: HashMap<&MapData, ServiceKey, Backend> = HashMap::try_from(&self.map)?;
        match leaders.get(&self.service, 0) {
            Ok(b) => Ok(Some(b)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("read HARP_LEADERS"),
        }
    }

    /// One leader change; `first` waits for the agent's etcd session and is not counted.
    fn update(&mut self, first: bool) -> anyhow::Result<()> {
        let i = self.n;
        self.n += 1;
        self.rt
            .block_on(self.client.delete(self.key.as_str(), None))?;
        wait(UPDATE_TIMEOUT, || Ok(self.entry()?.is_none()))
            .with_context(|| format!("update {i}: the entry stayed after the key was deleted"))?;
        let leader = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1 + (i % 2) as u8), 5432);
        let record = LeaderRecord {
            version: RECORD_VERSION,
            node: format!("fake{}", 1 + i % 2),
            location: LOCATION.into(),
            address: leader.ip().to_string(),
            port: leader.port(),
            handover_to: None,
            leaving: false,
            ..Default::default()
        };
        let mut c = self.client.clone();
        let k = self.key.clone();
        let t0 = Instant::now();
        let put = self.rt.spawn(async move {
            let r = c.put(k, record.encode(), None).await;
            (r, Instant::now())
        });
        let timeout = if first { FIRST_TIMEOUT } else { UPDATE_TIMEOUT };
        let seen = wait(timeout, || {
            Ok(self.entry()?.is_some_and(|b| b.socket_addr() == leader))
        })
        .with_context(|| format!("update {i}: no entry for {leader}"))?;
        let (response, answered) = self.rt.block_on(put)?;
        let revision = response?
            .header()
            .context("a put response without header")?
            .revision();
        let token = self.entry()?.map(|b| b.token);
        if token != Some(revision as u64) {
            bail!("update {i}: the entry's token is {token:?}, the put's revision {revision}");
        }
        if !first {
            self.samples.push((seen - t0).as_secs_f64() * 1e3);
            self.puts.push((answered - t0).as_secs_f64() * 1e3);
        }
        Ok(())
    }

    fn summary(mut self, etcd_tls: bool) -> MapLatency {
        self.samples.sort_by(f64::total_cmp);
        self.puts.sort_by(f64::total_cmp);
        let at = |v: &[f64], p: f64| round_to(nearest_rank(v, p), 3);
        let (map, put) = (&self.samples, &self.puts);
        MapLatency {
            etcd_tls,
            n: map.len(),
            p50: at(map, 0.5),
            p99: at(map, 0.99),
            max: at(map, 1.0),
            target_p99: TARGET_P99_MS,
            met: at(map, 0.99) <= TARGET_P99_MS,
            put_p50: at(put, 0.5),
            put_p99: at(put, 0.99),
            p50_vs_plaintext: None,
            p99_vs_plaintext: None,
        }
    }
}

/// Reads until `done` holds; the instant it did. `Err` after `timeout`.
fn wait(
    timeout: Duration,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if done()? {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("not within {timeout:?}");
        }
        std::thread::sleep(POLL);
    }
}
