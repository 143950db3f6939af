//! A backend: `DemoService` and `grpc.health.v1.Health` on one listener, every reply
//! carrying the backend's id.

use std::net::TcpListener;
use std::pin::Pin;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::proto::demo_service_server::{DemoService, DemoServiceServer};
use crate::proto::{HelloReply, HelloRequest};
use crate::{Error, SERVICE, runtime};

/// How long a stopping server waits for its connections to close before it quits anyway.
const GRACE: Duration = Duration::from_secs(2);

/// The service of one backend.
#[derive(Debug, Clone)]
pub struct Backend {
    id: String,
}

impl Backend {
    pub fn new(id: &str) -> Backend {
        Backend { id: id.to_owned() }
    }

    fn reply(&self, req: &HelloRequest) -> HelloReply {
        HelloReply {
            message: format!("hello {}", req.name),
            backend_id: self.id.clone(),
        }
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send>>;

#[tonic::async_trait]
impl DemoService for Backend {
    async fn say_hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        Ok(Response::new(self.reply(req.get_ref())))
    }

    type SayHelloStreamStream = ReplyStream;

    async fn say_hello_stream(
        &self,
        req: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let backend = self.clone();
        let replies = req.into_inner().map(move |r| r.map(|r| backend.reply(&r)));
        Ok(Response::new(Box::pin(replies)))
    }
}

/// Serves `DemoService` (answering as `id`) and the health service on `listener` until
/// `stop` completes, then lets the calls in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    id: &str,
    stop: impl Future<Output = ()>,
) -> Result<(), Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    serve_reporting(listener, id, health, health_service, stop).await
}

/// [`serve`] with the health service of `health` (whose statuses the caller may change).
async fn serve_reporting<H: tonic_health::pb::health_server::Health>(
    listener: tokio::net::TcpListener,
    id: &str,
    health: HealthReporter,
    health_service: tonic_health::pb::health_server::HealthServer<H>,
    stop: impl Future<Output = ()>,
) -> Result<(), Error> {
    health.set_serving::<DemoServiceServer<Backend>>().await;
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(DemoServiceServer::new(Backend::new(id)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
        .await?;
    Ok(())
}

/// A server running on a thread of its own; dropping it stops it.
#[derive(Debug)]
pub struct ServerHandle {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), Error>>>,
    health: HealthReporter,
}

/// Starts [`serve`] on `listener` (bound by the caller, e.g. in a backend's namespace) on a
/// new thread with its own runtime.
pub fn spawn(listener: TcpListener, id: &str) -> Result<ServerHandle, Error> {
    listener.set_nonblocking(true).map_err(Error::Listener)?;
    let rt = runtime()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let id = id.to_owned();
    let (health, health_service) = tonic_health::server::health_reporter();
    let reporter = health.clone();
    let thread = std::thread::spawn(move || {
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).map_err(Error::Listener)?;
            let stopping = Arc::new(Notify::new());
            let signal = {
                let stopping = stopping.clone();
                async move {
                    let _ = stopped.await; // a dropped sender stops the server too
                    stopping.notify_one();
                }
            };
            let grace_over = async {
                stopping.notified().await;
                tokio::time::sleep(GRACE).await;
            };
            tokio::select! {
                r = serve_reporting(listener, &id, reporter, health_service, signal) => r,
                () = grace_over => Ok(()),
            }
        })
    });
    Ok(ServerHandle {
        stop: Some(stop),
        thread: Some(thread),
        health,
    })
}

impl ServerHandle {
    /// Sets what the health service answers, for the server as a whole (`""`) and for
    /// [`SERVICE`]: `SERVING`, or `NOT_SERVING` while the server goes on answering calls.
    pub fn set_serving(&self, serving: bool) -> Result<(), Error> {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        runtime()?.block_on(async {
            self.health.set_service_status("", status).await;
            self.health.set_service_status(SERVICE, status).await;
        });
        Ok(())
    }

    /// Stops the server and waits (at most [`GRACE`] after the stop) for its thread.
    pub fn stop(mut self) -> Result<(), Error> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), Error> {
        drop(self.stop.take());
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| Error::Panicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}
