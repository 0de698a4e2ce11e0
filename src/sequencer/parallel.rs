//! Parallel applies (`--enableParallelApplies`): tables with no foreign-key path between
//! them form independent groups, and groups apply concurrently, each in source order.
//!
//! Each source transaction is split by group (its mutations keep their order within a
//! group); every group goes to one of up to `parallelism` workers, each with its own target
//! connection, running the immediate sequencer over its share. A source transaction is done
//! when every group it touched has committed its part; the checkpoint is the position of
//! the last transaction such that it and every earlier one are done (`docs/architecture.md`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::SequencerConfig;
use super::{Checkpoints, Input, Progress, SequencerError, Target, run_immediate};
use crate::staging::{CheckpointError, Committed};
use crate::target::TargetError;
use crate::types::mutation::{Position, SourceTransaction};

/// The root of `i`'s set in the union-find forest `parent` (paths compressed on the way).
pub fn find(parent: &mut [usize], i: usize) -> usize {
    let mut root = i;
    while parent[root] != root {
        root = parent[root];
    }
    let mut j = i;
    while parent[j] != root {
        let next = parent[j];
        parent[j] = root;
        j = next;
    }
    root
}

/// Table → group, from foreign-key connectivity (undirected). Tables not listed fall in
/// group 0 together.
pub fn table_groups(
    tables: &BTreeSet<String>,
    foreign_keys: &[(String, String)],
) -> HashMap<String, usize> {
    let names: Vec<&String> = tables.iter().collect();
    let index: HashMap<&String, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut parent: Vec<usize> = (0..names.len()).collect();
    for (child, parent_table) in foreign_keys {
        if let (Some(&a), Some(&b)) = (index.get(child), index.get(parent_table)) {
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            parent[ra] = rb;
        }
    }
    let mut group_of_root: HashMap<usize, usize> = HashMap::new();
    let mut out = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let root = find(&mut parent, i);
        let next = group_of_root.len() + 1;
        let group = *group_of_root.entry(root).or_insert(next);
        out.insert((*name).clone(), group);
    }
    out
}

/// Forwards a worker's commits to the coordinator.
struct WorkerCheckpoints {
    worker: usize,
    commits: mpsc::UnboundedSender<(usize, Position, i64)>,
}

impl Checkpoints for WorkerCheckpoints {
    async fn save(&mut self, committed: Committed) -> Result<(), CheckpointError> {
        self.commits
            .send((self.worker, committed.position().clone(), committed.commit_nanos()))
            .map_err(|_| CheckpointError {
                message: "the coordinator stopped".to_owned(),
                kind: crate::error::ErrorKind::Fatal,
            })
    }
}

/// Applies source transactions with table groups in parallel. `groups` maps table → group;
/// `make_target` opens one target per worker.
pub async fn run_parallel<I, T, F, Fut, C>(
    config: &SequencerConfig,
    mut input: I,
    groups: HashMap<String, usize>,
    workers: usize,
    mut make_target: F,
    checkpoints: &mut C,
) -> Result<Progress, SequencerError>
where
    I: Input,
    T: Target + Send + 'static,
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<T, TargetError>>,
    C: Checkpoints,
{
    let workers = workers.max(1);
    let (commits_tx, mut commits) = mpsc::unbounded_channel::<(usize, Position, i64)>();
    let mut senders = Vec::new();
    let mut tasks: JoinSet<Result<Progress, SequencerError>> = JoinSet::new();
    for worker in 0..workers {
        let mut target = make_target(worker).await.map_err(|e| SequencerError::Open {
            message: format!("for worker {worker}: {e}"),
            kind: e.kind,
        })?;
        let (sender, receiver) = mpsc::channel::<SourceTransaction>(16);
        senders.push(sender);
        let mut cp = WorkerCheckpoints { worker, commits: commits_tx.clone() };
        let config = config.clone();
        tasks.spawn(async move { run_immediate(&config, receiver, &mut target, &mut cp).await });
    }
    drop(commits_tx);

    // Transactions in flight: (position, source commit time, workers that still owe their part).
    let mut in_flight: VecDeque<(Position, i64, BTreeSet<usize>)> = VecDeque::new();
    // Per worker, the positions of its parts in order (to credit a commit "up to" a position).
    let mut owed: Vec<VecDeque<Position>> = vec![VecDeque::new(); workers];
    let mut progress = Progress::default();
    let (mut input_open, mut commits_open) = (true, true);
    let mut last_saved: Option<Position> = None;
    // Ends only when the input is closed, every worker has finished and been joined (so a
    // worker's error is always seen), and every commit report has been read.
    loop {
        tokio::select! {
            tx = input.recv(), if input_open => match tx {
                None => {
                    input_open = false;
                    senders.clear();
                }
                Some(tx) => {
                    progress.transactions += 1;
                    progress.mutations += tx.mutations.len() as u64;
                    let mut parts: BTreeMap<usize, Vec<_>> = BTreeMap::new();
                    for m in tx.mutations {
                        let group = groups.get(&m.table).copied().unwrap_or(0);
                        parts.entry(group % workers).or_default().push(m);
                    }
                    let touched: BTreeSet<usize> = parts.keys().copied().collect();
                    in_flight.push_back((tx.position.clone(), tx.commit_nanos, touched));
                    for (worker, mutations) in parts {
                        owed[worker].push_back(tx.position.clone());
                        let part = SourceTransaction { mutations, position: tx.position.clone(), commit_nanos: tx.commit_nanos };
                        if senders[worker].send(part).await.is_err() {
                            break;
                        }
                    }
                }
            },
            commit = commits.recv(), if commits_open => match commit {
                None => commits_open = false,
                Some((worker, position, _)) => {
                    progress.commits += 1;
                    // Everything this worker owed up to `position` is committed.
                    while let Some(p) = owed[worker].pop_front() {
                        for (tx_position, _, waiting) in in_flight.iter_mut() {
                            if *tx_position == p {
                                waiting.remove(&worker);
                                break;
                            }
                        }
                        if p == position {
                            break;
                        }
                    }
                    save_done(&mut in_flight, &mut last_saved, checkpoints).await?;
                }
            },
            Some(finished) = tasks.join_next(), if !tasks.is_empty() => {
                match finished {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(e) => return Err(SequencerError::Worker { message: e.to_string() }),
                }
            },
            else => break,
        }
    }
    // Transactions that touched no worker (all mutations filtered away) are done too.
    save_done(&mut in_flight, &mut last_saved, checkpoints).await?;
    Ok(progress)
}

/// Saves the position of the last transaction at the front of `in_flight` that every worker
/// has finished (unless already saved), dropping the finished ones.
async fn save_done<C: Checkpoints>(
    in_flight: &mut VecDeque<(Position, i64, BTreeSet<usize>)>,
    last_saved: &mut Option<Position>,
    checkpoints: &mut C,
) -> Result<(), SequencerError> {
    let mut done = None;
    while in_flight.front().is_some_and(|(_, _, waiting)| waiting.is_empty()) {
        done = in_flight.pop_front().map(|(p, nanos, _)| (p, nanos));
    }
    if let Some((p, nanos)) = done
        && last_saved.as_ref() != Some(&p)
    {
        checkpoints
            .save(Committed::after_commit(p.clone()).committed_at(nanos))
            .await
            .map_err(|source| SequencerError::Checkpoint { position: p.to_string(), source })?;
        *last_saved = Some(p);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_foreign_key_connectivity() {
        let tables: BTreeSet<String> =
            ["a", "b", "c", "d", "e"].iter().map(|s| (*s).to_owned()).collect();
        let fks = vec![
            ("b".to_owned(), "a".to_owned()),
            ("c".to_owned(), "b".to_owned()),
            ("e".to_owned(), "d".to_owned()),
        ];
        let g = table_groups(&tables, &fks);
        assert_eq!(g["a"], g["b"]);
        assert_eq!(g["b"], g["c"]);
        assert_eq!(g["d"], g["e"]);
        assert_ne!(g["a"], g["d"]);
        assert!(g.values().all(|&v| v >= 1), "group 0 is for unknown tables");
    }
}
