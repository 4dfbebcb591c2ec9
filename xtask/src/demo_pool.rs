//! The demo's last act: a harp-agent running PgBouncer (`proxy.type: pgbouncer`, transaction
//! pooling), and a planned switchover that a pooled session does not notice.

use std::time::Duration;

use anyhow::{Context, bail};
use harp_tests::TestCluster;
use harp_tests::agent::{AgentProc, AgentSpec};
use harp_tests::harpctl::harpctl;
use harp_tests::rt::block_on;
use tokio_postgres::{Client, SimpleQueryMessage};

/// The Postgres port a session's next transaction runs on.
async fn server_port(client: &Client) -> anyhow::Result<u16> {
    let rows = client.simple_query("SELECT inet_server_port()").await?;
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0)?.parse().ok(),
            _ => None,
        })
        .context("no port in the answer")
}

pub fn run(c: &TestCluster, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    println!(
        "\n== harp-agent pool1 for dca with PgBouncer (proxy.type: pgbouncer, transaction \
         pooling), and a switchover a pooled session does not notice"
    );
    if !harp_tests::pgbouncer_installed() {
        println!("   skipped: PgBouncer is not installed (scripts/setup installs it)");
        return Ok(());
    }
    // The demo's Postgres trusts `postgres`; PgBouncer still needs to know the role.
    let userlist = c.dir().join("pool1-users.txt");
    std::fs::write(&userlist, "\"postgres\" \"\"\n")?;
    let mut spec = AgentSpec::new("pool1", "dca", "demo", c.etcd.endpoints());
    spec.extra_yaml = format!(
        "type: pgbouncer\npool_mode: transaction\nauth_type: trust\nauth_file: {}\n",
        userlist.display()
    );
    let mut agent = AgentProc::start(c.dir(), spec);
    if !agent.wait_ready(Duration::from_secs(20)) {
        bail!(
            "the PgBouncer agent never became ready\n{}",
            agent.log_tail(30)
        );
    }
    let name_of = |port: u16| {
        c.nodes
            .iter()
            .find(|n| n.pg.port() == port)
            .map_or("?".to_owned(), |n| n.name.clone())
    };
    let dsn = agent.dsn("postgres");
    let session = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        anyhow::Ok(client)
    })?;
    let before = rt.block_on(server_port(&session))?;
    println!(
        "   a session through PgBouncer (127.0.0.1:{}) runs on {}",
        agent.listen_port(),
        name_of(before)
    );
    let (leader, _) = block_on(|| c.leader("dca")).context("no dca leader")?;
    let target = c
        .nodes
        .iter()
        .find(|n| n.location == "dca" && n.name != leader.node)
        .context("no other node in dca")?
        .name
        .clone();
    let (code, out, err) = harpctl(c, &["promote", &target]);
    if code != 0 {
        bail!("harpctl promote {target}: {out}{err}");
    }
    print!("   harpctl promote {target}: {out}");
    let after = rt.block_on(server_port(&session))?;
    println!(
        "   the same session's next transaction runs on {}: no reconnect, no error \
         (PgBouncer paused it between transactions and re-pointed it)",
        name_of(after)
    );
    Ok(())
}
