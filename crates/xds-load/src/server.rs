//! The server role: the control plane under test, in a process of its own so that its memory
//! and CPU time are its own. It builds a synthetic mesh, publishes every proxy's snapshot
//! with the runtime's `Publisher`, serves ADS on loopback with the xDS crate's `AdsServer`,
//! and on each command from the driver applies one route change and reports which proxies
//! must receive what (see [`crate::protocol`]).
//!
//! The model and the publisher run on the main thread, the ADS streams on a Tokio runtime
//! beside it: a change is computed while the streams keep being served, as in the running
//! control plane.

use std::{
    io::{self, BufRead, BufWriter, Write},
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use remora_envoy::Options;
use remora_model::{
    Mesh,
    input::{Event, MeshSettings},
};
use remora_runtime::{Publisher, publish::proxy_id};
use remora_synthetic::{Shape, Synthetic};
use remora_xds::{AdsServer, SnapshotCache, StatusRegistry};
use tokio::{net::TcpSocket, sync::watch};
use tokio_stream::wrappers::TcpListenerStream;

use crate::{
    Error, procfs,
    protocol::{self, Changed, Expect, Line, Ready},
};

/// Connections waiting to be accepted. Linux caps it at `net.core.somaxconn` (4096 by
/// default); the driver connects fewer at once.
const BACKLOG: u32 = 4096;
/// How long open streams get to end when the server stops.
const DRAIN: Duration = Duration::from_secs(2);

/// The reference mesh (10,000 sidecar pods) scaled to `proxies` pods: Services, routes and
/// namespaces in proportion, so every Service keeps ten pods, every namespace twenty Services,
/// and each proxy sees as many Services per pod as in the reference. Same seed.
pub fn shape_for(proxies: usize, egress: bool) -> Shape {
    let reference = Shape::reference();
    let scale = |n: usize| (n * proxies).div_ceil(reference.pods).max(1);
    let namespaces = scale(reference.namespaces);
    Shape {
        namespaces,
        // At least one team namespace stays unshared, or no proxy's egress scope would
        // differ from another's.
        shared_namespaces: scale(reference.shared_namespaces).min(namespaces.saturating_sub(1)),
        services: scale(reference.services),
        pods: proxies,
        routes: scale(reference.routes),
        egress,
        seed: reference.seed,
    }
}

pub fn serve(proxies: usize, egress: bool, response_budget_mib: usize) -> Result<(), Error> {
    // Every proxy holds one connection, plus a margin for everything else.
    procfs::ensure_open_files(proxies as u64 + 256).map_err(Error::Limits)?;
    let pid = std::process::id();
    let rss = || procfs::memory(pid).unwrap_or_default().rss_kib;
    let rss_start_kib = rss();

    let synthetic = Synthetic::new(shape_for(proxies, egress));
    let mut mesh = Mesh::new(MeshSettings::default());
    let start = Instant::now();
    // The initial report of changes is of no use here: everything is published below.
    drop(mesh.apply(synthetic.objects().into_iter().map(Event::Upsert)));
    let build = start.elapsed();
    let rss_built_kib = rss();
    // Progress for whoever watches a long start; the driver reads only stdout.
    eprintln!(
        "xds-load serve: mesh of {proxies} proxies built in {:.2} s, RSS {} MiB; publishing",
        build.as_secs_f64(),
        rss_built_kib / 1024
    );

    let cache = SnapshotCache::new();
    let mut publisher = Publisher::new(cache.clone(), Options::default(), |_| None);
    let start = Instant::now();
    publisher.publish_all(&mesh);
    let publish = start.elapsed();
    let rss_published_kib = rss();
    let heap_published_kib = crate::heap_kib();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let listener = {
        let _entered = runtime.enter();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let socket = TcpSocket::new_v4().map_err(Error::Listen)?;
        socket.bind(addr).map_err(Error::Listen)?;
        socket.listen(BACKLOG).map_err(Error::Listen)?
    };
    let port = listener.local_addr().map_err(Error::Listen)?.port();
    let (stop, stopped) = watch::channel(false);
    let mut stop_serving = stopped.clone();
    let ads = AdsServer::new(cache.clone(), StatusRegistry::new(), stopped)
        .response_budget(response_budget_mib.saturating_mul(1024 * 1024))
        .into_service();
    let server = runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(ads)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stop_serving.wait_for(|s| *s).await;
            }),
    );

    let mut out = BufWriter::new(io::stdout().lock());
    let proxies_known: Vec<_> = mesh.proxies().cloned().collect();
    let resources: usize = proxies_known
        .iter()
        .filter_map(|p| cache.get(&proxy_id(p)))
        .map(|s| s.len())
        .sum();
    let resources_per_proxy = resources / proxies_known.len().max(1);
    for p in &proxies_known {
        writeln!(out, "{}", Line::Proxy(proxy_id(p).to_string())).map_err(Error::Pipe)?;
    }
    let ready = Ready {
        port,
        build,
        publish,
        rss_start_kib,
        rss_built_kib,
        rss_published_kib,
        heap_published_kib,
        resources_per_proxy,
    };
    writeln!(out, "{}", Line::Ready(ready)).map_err(Error::Pipe)?;
    out.flush().map_err(Error::Pipe)?;

    // The route on the HTTP port of a Service halfway through the mesh, in a team namespace,
    // as the model's benchmarks change it. Odd changes move its split, even ones move it back.
    let route = synthetic.shape().services / 2;
    let mut moved = false;
    for command in io::stdin().lock().lines() {
        let command = command.map_err(Error::Pipe)?;
        match command.trim() {
            protocol::CHANGE => {
                let object = if moved {
                    synthetic.route(route)
                } else {
                    synthetic.route_change(route)
                };
                moved = !moved;
                let key = object.key();
                let start = Instant::now();
                let changes = mesh.apply([Event::Upsert(object)]);
                let apply = start.elapsed();
                publisher.publish(&mesh, &changes);
                let publish = start.elapsed() - apply;
                let affected = changes.proxies();
                let changed = Changed {
                    route: format!("{}/{}", key.namespace, key.name),
                    apply,
                    publish,
                    affected: affected.len(),
                };
                writeln!(out, "{}", Line::Changed(changed)).map_err(Error::Pipe)?;
                for proxy in affected {
                    let id = proxy_id(proxy);
                    let snapshot = cache.get(&id).unwrap_or_default();
                    for key in changes.resources_of(proxy) {
                        let type_url = remora_envoy::type_url(key.kind);
                        let expect = Expect {
                            proxy: id.to_string(),
                            type_url: type_url.into(),
                            name: key.name.to_string(),
                            version: snapshot.get(type_url, &key.name).map(|r| r.version.clone()),
                        };
                        writeln!(out, "{}", Line::Expect(expect)).map_err(Error::Pipe)?;
                    }
                }
                writeln!(out, "{}", Line::Done).map_err(Error::Pipe)?;
                out.flush().map_err(Error::Pipe)?;
            }
            protocol::HEAP => {
                writeln!(
                    out,
                    "{}",
                    Line::Heap(crate::heap_kib(), crate::heap_peak_kib())
                )
                .map_err(Error::Pipe)?;
                out.flush().map_err(Error::Pipe)?;
            }
            protocol::QUIT => break,
            other => eprintln!("xds-load serve: unknown command {other:?}"),
        }
    }

    stop.send_replace(true);
    runtime.block_on(async {
        if let Ok(Ok(Err(e))) = tokio::time::timeout(DRAIN, server).await {
            eprintln!("xds-load serve: the server ended with an error: {e}");
        }
    });
    runtime.shutdown_timeout(DRAIN);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_proxies_are_the_reference_mesh_and_fewer_scale_it_down() {
        assert_eq!(shape_for(10_000, false), Shape::reference());
        let small = shape_for(1_000, true);
        assert_eq!(
            (
                small.namespaces,
                small.shared_namespaces,
                small.services,
                small.pods,
                small.routes
            ),
            (5, 1, 100, 1_000, 200)
        );
        assert!(small.egress);
        let tiny = shape_for(10, false);
        assert_eq!(
            (tiny.namespaces, tiny.shared_namespaces, tiny.services),
            (1, 0, 1)
        );
    }
}
