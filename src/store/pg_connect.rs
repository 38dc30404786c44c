//! How a replica reaches PostgreSQL by host name without the C library's resolver. The
//! container image holds one static binary and nothing else; glibc's `getaddrinfo` would load
//! its NSS modules at run time, and there are none. Each new connection resolves the host with
//! hickory (the resolver the HTTP clients use: /etc/hosts, then /etc/resolv.conf), so a
//! database that moves to another address (a failover that changes DNS) is found again.

use std::net::IpAddr;

use deadpool_postgres::Connect;
use futures_util::future::BoxFuture;
use hickory_resolver::TokioResolver;
use tokio::task::JoinHandle;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

pub struct ResolvingConnect {
    resolver: Option<TokioResolver>,
}

impl ResolvingConnect {
    pub fn new() -> Self {
        // Without a readable system configuration there is nothing better to ask: the host is
        // then left to tokio-postgres (and the C library).
        let resolver = match TokioResolver::builder_tokio() {
            Ok(builder) => builder.build().ok(),
            Err(e) => {
                tracing::warn!(error = %e, "no DNS configuration for the database host; using the C library's resolver");
                None
            }
        };
        ResolvingConnect { resolver }
    }

    /// The addresses of a single host given by name (`localhost` may be ::1 and 127.0.0.1);
    /// empty when there is nothing to resolve or it did not resolve.
    async fn addresses(&self, config: &Config) -> Vec<IpAddr> {
        let Some(resolver) = self.resolver.as_ref() else { return Vec::new() };
        let [Host::Tcp(name)] = config.get_hosts() else { return Vec::new() };
        if !config.get_hostaddrs().is_empty() || name.parse::<IpAddr>().is_ok() {
            return Vec::new();
        }
        match resolver.lookup_ip(name.as_str()).await {
            Ok(found) => found.iter().collect(),
            Err(e) => {
                tracing::warn!(host = %name, error = %e, "the database host did not resolve");
                Vec::new()
            }
        }
    }
}

impl Connect for ResolvingConnect {
    fn connect(&self, config: &Config) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let config = config.clone();
        Box::pin(async move {
            let at = |ip: IpAddr| {
                let mut one = config.clone();
                one.hostaddr(ip);
                one
            };
            // Each address in turn, as tokio-postgres tries those of the C library's resolver;
            // the last one's error is the one reported.
            let mut addresses = self.addresses(&config).await;
            let last = addresses.pop();
            for ip in addresses {
                if let Ok(pair) = at(ip).connect(NoTls).await {
                    return Ok(started(pair));
                }
            }
            let final_attempt = match last {
                Some(ip) => at(ip),
                None => config.clone(),
            };
            Ok(started(final_attempt.connect(NoTls).await?))
        })
    }
}

/// The connection driven by a task of its own, as the pool expects.
fn started(
    (client, connection): (
        Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
) -> (Client, JoinHandle<()>) {
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection ended");
        }
    });
    (client, task)
}
