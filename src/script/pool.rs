//! Several engines on their own threads, so transforms run in parallel.
//!
//! An engine is single-threaded (QuickJS), so the pool starts one thread per worker, each with
//! its own engine loaded from the same compiled script. A job goes to whichever worker is
//! free. Global variables in a script are per engine: a script that counts rows sees the rows
//! of its own engine only (with one worker, all of them).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use tokio::sync::oneshot;

use super::engine::{Configured, Engine, EngineOptions, ScriptError};
use super::{CompiledScript, Meta, Op, Routed};
use crate::types::Row;

type Job = Box<dyn FnOnce(&mut Engine) + Send>;

/// Where a job's time went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timing {
    /// Waiting for a free engine.
    pub wait: std::time::Duration,
    /// Running on it.
    pub run: std::time::Duration,
}

/// A pool of engines running one userscript.
#[derive(Debug)]
pub struct ScriptPool {
    jobs: Option<mpsc::Sender<Job>>,
    workers: Vec<thread::JoinHandle<()>>,
    configured: Configured,
}

impl ScriptPool {
    /// Starts `workers` threads (at least one), each loading `script`. Fails if any engine
    /// fails to load.
    pub fn new(
        script: Arc<CompiledScript>,
        options: EngineOptions,
        workers: usize,
    ) -> Result<Self, ScriptError> {
        let (jobs, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut handles = Vec::new();
        let mut configured = None;
        let name = script.entry.clone();
        for n in 0..workers.max(1) {
            let (ready_tx, ready_rx) = mpsc::channel();
            let (script, options, receiver) = (script.clone(), options.clone(), receiver.clone());
            let handle = thread::Builder::new()
                .name(format!("userscript-{n}"))
                .spawn(move || {
                    let mut engine = match Engine::new(script, options) {
                        Ok(engine) => {
                            let _ = ready_tx.send(Ok(engine.configured().clone()));
                            engine
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    loop {
                        let job = match receiver.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut engine),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| ScriptError::Engine {
                    script: name.clone(),
                    message: e.to_string(),
                })?;
            handles.push(handle);
            match ready_rx.recv() {
                Ok(Ok(c)) => configured = Some(c),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(ScriptError::Engine {
                        script: name,
                        message: "a userscript worker stopped while loading".into(),
                    });
                }
            }
        }
        Ok(Self { jobs: Some(jobs), workers: handles, configured: configured.unwrap_or_default() })
    }

    /// How many engines run the script.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// What the script configured (the same in every engine).
    pub fn configured(&self) -> &Configured {
        &self.configured
    }

    /// Runs `f` on a free engine and waits for its answer.
    pub async fn run<R, F>(&self, f: F) -> R
    where
        F: FnOnce(&mut Engine) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.submit(Box::new(move |engine| {
            let _ = tx.send(f(engine));
        }));
        rx.await.expect("a userscript worker stopped")
    }

    /// [`ScriptPool::run`], also saying how long the job waited for a free engine and how
    /// long it ran there.
    pub async fn run_timed<R, F>(&self, f: F) -> (R, Timing)
    where
        F: FnOnce(&mut Engine) -> R + Send + 'static,
        R: Send + 'static,
    {
        let submitted = std::time::Instant::now();
        self.run(move |engine| {
            let started = std::time::Instant::now();
            let result = f(engine);
            (result, Timing { wait: started - submitted, run: started.elapsed() })
        })
        .await
    }

    /// Schema-level handlers over a batch, on a free engine.
    pub async fn schema_rows(
        &self,
        schema: String,
        op: Op,
        mut rows: Vec<(Row, Meta)>,
    ) -> Result<Vec<Routed>, ScriptError> {
        self.run(move |engine| engine.schema_rows_taking(&schema, op, &mut rows)).await
    }

    fn submit(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // Workers only stop when the pool drops, so sending cannot fail while it lives.
            let _ = jobs.send(job);
        }
    }
}

impl Drop for ScriptPool {
    fn drop(&mut self) {
        self.jobs.take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}
