//! Connecting a client's session to the leader: wait for a route (the client held meanwhile),
//! connect, and check the route again, so that no session starts with a replaced leader.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use harp_core::routing::Route;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Shared;

/// Pause between connection attempts to a leader that did not answer.
const RETRY_DELAY: Duration = Duration::from_millis(50);

/// Decrements a counter when dropped, so every exit path keeps the counts right.
pub(super) struct Count<'a>(&'a AtomicU64);

impl<'a> Count<'a> {
    pub(super) fn up(c: &'a AtomicU64) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        Self(c)
    }
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits for a route and connects to it, retrying until `pause_timeout`; the route is checked
/// again after connecting, so a client never starts a session with a replaced leader.
pub(super) async fn connect_leader(shared: &Shared) -> Result<(TcpStream, i64), String> {
    let live = shared.live();
    let deadline = Instant::now() + live.pause_timeout;
    let mut route = shared.route.clone();
    loop {
        // Without authority nothing is routed: the client is held as if there were no leader
        // (the decision loop clears the route at the same deadline, or a keep-alive renews it).
        let current = route
            .borrow_and_update()
            .route
            .clone()
            .filter(|_| shared.trust.holds());
        let Some(r) = current else {
            let _held = Count::up(&shared.held);
            let routed = async {
                match shared.trust.holds() {
                    true => route.wait_for(|r| r.route.is_some()).await.map(|_| ()),
                    // The route may stand while the authority lapsed for a moment: look again
                    // shortly rather than at the next route change only.
                    false => {
                        tokio::time::sleep(RETRY_DELAY).await;
                        Ok(())
                    }
                }
            };
            match tokio::time::timeout_at(deadline, routed).await {
                Ok(Ok(_)) => continue,
                // Nobody leads now: that, not an earlier failed attempt, is the reason.
                _ => {
                    let (loc, wait) = (&shared.location, humantime(live.pause_timeout));
                    let draining = shared.route.borrow().draining.is_some();
                    return Err(match draining {
                        true => format!(
                            "the lead master of location {loc} is still handing over (planned \
                             switchover) after pause_timeout ({wait})"
                        ),
                        false => {
                            format!(
                                "no lead master for location {loc} within pause_timeout ({wait})"
                            )
                        }
                    });
                }
            }
        };
        let attempt = tokio::time::timeout(live.timeout, connect(&r));
        // A leader replaced meanwhile is given up at once, not at the connect timeout (a
        // leader behind a partition never answers).
        let replaced = route.wait_for(|now| now.route.as_ref().map(|n| n.token) != Some(r.token));
        let attempt = tokio::select! {
            result = attempt => result,
            changed = replaced => match changed {
                Ok(_) => continue,
                Err(_) => return Err("the agent is shutting down".into()),
            },
        };
        let error = match attempt {
            Ok(Ok(server)) => {
                if route
                    .borrow()
                    .route
                    .as_ref()
                    .is_some_and(|now| now.token == r.token)
                    && shared.trust.holds()
                {
                    return Ok((server, r.token));
                }
                continue; // the leader changed while we connected: go to the new one
            }
            Ok(Err(e)) => format!(
                "lead master {} at {}:{} is unreachable: {e}",
                r.node, r.address, r.port
            ),
            Err(_) => format!(
                "lead master {} at {}:{} did not accept within {}",
                r.node,
                r.address,
                r.port,
                humantime(live.timeout)
            ),
        };
        if Instant::now() + RETRY_DELAY >= deadline {
            return Err(error);
        }
        // Retry when the route changes, or after a short delay for the same leader.
        let _ = tokio::time::timeout(RETRY_DELAY, route.changed()).await;
    }
}

/// Connects to the route's server. An IP address is used as is: resolving it through the
/// blocking resolver would cost a thread hop on every client connect.
pub async fn connect(r: &Route) -> std::io::Result<TcpStream> {
    match r.address.parse::<std::net::IpAddr>() {
        Ok(ip) => TcpStream::connect(SocketAddr::new(ip, r.port)).await,
        Err(_) => TcpStream::connect((r.address.as_str(), r.port)).await,
    }
}

fn humantime(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}
