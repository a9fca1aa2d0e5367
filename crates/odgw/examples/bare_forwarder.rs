//! odgw's plumbing with every layer taken out: the same accept loop
//! ([`odgw::listener`]), runtime and upstream client, and a service that only
//! swaps the `Authorization` header and the URI. No token check, tenant,
//! pacing, audit, cache or log.
//!
//! It is a reference row for the load benchmark (`tests/load/run`): the gap
//! between it and the full gateway is what odgw's own work costs, and the
//! gap between it and nginx is the HTTP stack's. Never a way to deploy.
//!
//! ```text
//! cargo run --release -p odgw --example bare_forwarder -- 127.0.0.1:8090 http://127.0.0.1:8080
//! ```

use std::{convert::Infallible, net::SocketAddr, process::ExitCode, time::Duration};

use http::{header, HeaderValue, StatusCode, Uri};
use odgw::listener::{serve_listener, ConnectionLimits};
use odgw_core::{Body, Request, Response};
use odgw_proxy::{UpstreamClient, UpstreamSettings};

const AUTHORIZATION: &str = "ODFHIR bench-dev/bench-cust";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(upstream), None) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("usage: bare_forwarder LISTEN_ADDR UPSTREAM_ORIGIN (e.g. 127.0.0.1:8090 http://127.0.0.1:8080)");
        return ExitCode::from(2);
    };
    let Ok(listen) = listen.parse::<SocketAddr>() else {
        eprintln!("bare_forwarder: {listen} is not an address like 127.0.0.1:8090");
        return ExitCode::from(2);
    };
    let upstream = upstream.trim_end_matches('/').to_owned();
    if upstream.parse::<Uri>().is_err() {
        eprintln!("bare_forwarder: {upstream} is not a URI");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bare_forwarder: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(listen, upstream)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare_forwarder: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(listen: SocketAddr, upstream: String) -> Result<(), Box<dyn std::error::Error>> {
    odgw_auth::install_crypto_providers();
    let client = UpstreamClient::new(UpstreamSettings::default())?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("bare_forwarder listening on {}", listener.local_addr()?);
    let service = tower::service_fn(move |request: Request| {
        let client = client.clone();
        let target = format!(
            "{upstream}{}",
            request.uri().path_and_query().map_or("/", |pq| pq.as_str())
        );
        async move { Ok::<_, Infallible>(forward(&client, target, request).await) }
    });
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve_listener(
        listener,
        service,
        ConnectionLimits::default(),
        shutdown,
        Duration::from_secs(1),
    )
    .await;
    Ok(())
}

async fn forward(client: &UpstreamClient, target: String, mut request: Request) -> Response {
    let Ok(uri) = target.parse::<Uri>() else {
        return status(StatusCode::BAD_REQUEST);
    };
    *request.uri_mut() = uri;
    request.headers_mut().remove(header::HOST);
    request.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_static(AUTHORIZATION),
    );
    match client.send(request).await {
        Ok(response) => response.map(Body::new),
        Err(_) => status(StatusCode::BAD_GATEWAY),
    }
}

fn status(code: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    response
}
