//! One run over several processes: `mpirun -n 4 cnn train --distributed mpi
//! ...` (or `srun -n 4 ...` under Slurm). Each process is a rank of the
//! launcher's job; the rank and the number of ranks come from MPI, never
//! from flags of ours.
//!
//! Every rank builds the same network from the seed, reads the same data
//! and walks the same seeded shuffle. A step's global batch is cut into
//! micro-batches exactly as one process cuts it (see `train::step`), and
//! each rank computes the gradients of a contiguous block of them. The
//! blocks are then added in micro-batch order along a chain: rank 0 sends
//! its running sum to rank 1, which adds its parts one by one and sends the
//! sum on, and the last rank broadcasts the total. That is the same
//! sequence of f32 additions one process makes, so for networks without
//! batch norm N ranks write the same checkpoint bits as one process with the
//! same global batch. Networks with batch norm (and every network on a GPU,
//! where one process runs the batch in one piece) give each rank an equal
//! slice of the batch as one piece: its batch-norm statistics are its own,
//! as under PyTorch's DDP, and the numbers then depend on the number of
//! ranks (but not on anything else).
//!
//! Rank 0 alone writes the run directory, the checkpoints and the history,
//! and evaluates; it sends each epoch's record to the others, which judge
//! it as it does (schedules, early stopping), so every rank takes the same
//! steps and stops at the same one. Its Ctrl-C / SIGTERM flag travels with
//! the gradients, so an interruption stops every rank after the same step.
//!
//! When a rank fails it prints why and ends the job (`MPI_Abort`), so
//! nothing waits forever; when a rank is killed, the launcher ends the
//! others. The checkpoints on disk are whole either way (they are written
//! atomically).

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// The engine that connects the ranks (`--distributed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// MPI (Open MPI, MPICH): CPU nodes, and GPUs through host memory.
    Mpi,
    /// NCCL between GPUs.
    Nccl,
}

/// The ranks of a run and the messages between them. Only `--distributed`
/// makes one, and only a build with the `mpi` feature can.
pub struct Group {
    rank: usize,
    size: usize,
    /// Ranks on this machine, this one included.
    local: usize,
    #[cfg(feature = "mpi")]
    mpi: mpi_engine::Mpi,
    #[cfg(not(feature = "mpi"))]
    never: std::convert::Infallible,
}

/// Tags of the point-to-point messages: the running sum's scalars, then its
/// gradients.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
const TAG_META: i32 = 1;
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
const TAG_GRADS: i32 = 2;

impl Group {
    /// Joins the job the launcher started (a job of one without a launcher).
    pub fn join(engine: Engine) -> Result<Group> {
        match engine {
            Engine::Nccl => crate::bail_input!(
                "--distributed nccl is not available in this build: cnn has no NCCL engine yet. On GPUs use \
                 --distributed mpi (a build with --features cuda,mpi): the ranks exchange gradients through \
                 host memory"
            ),
            Engine::Mpi => Self::join_mpi(),
        }
    }

    #[cfg(feature = "mpi")]
    fn join_mpi() -> Result<Group> {
        check_slurm_step()?;
        let mpi = mpi_engine::Mpi::init()?;
        let (rank, size, local) = mpi.ranks();
        Ok(Group {
            rank,
            size,
            local,
            mpi,
        })
    }

    #[cfg(not(feature = "mpi"))]
    fn join_mpi() -> Result<Group> {
        crate::bail_input!(
            "--distributed mpi needs a cnn built with MPI: install Open MPI (Debian: apt-get install \
             libopenmpi-dev openmpi-bin libclang-dev) and rebuild with `cargo install --path . --features mpi`"
        )
    }

    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn size(&self) -> usize {
        self.size
    }
    /// Ranks on this machine (this one included): they share its cores.
    pub fn local_ranks(&self) -> usize {
        self.local
    }
    /// Rank 0: the one that writes and evaluates.
    pub fn is_leader(&self) -> bool {
        self.rank == 0
    }

    /// The contiguous block of `parts` micro-batches this rank computes:
    /// as even as the count allows, in rank order.
    pub fn block(&self, parts: usize) -> std::ops::Range<usize> {
        block(self.rank, self.size, parts)
    }

    /// Adds this rank's parts (gradients flattened in one fixed order, with
    /// their loss and count) to the running sum of the ranks before it, in
    /// part order, and returns the total over every rank, the same on each,
    /// with rank 0's `stop` flag.
    pub fn chain_sum(&self, mine: Vec<Part>, stop: bool) -> Result<Total> {
        let mut sum: Option<Part> = None;
        let mut stop = stop;
        if self.rank > 0 {
            let meta = self.recv_f64(self.rank - 1, TAG_META)?;
            stop = meta[3] != 0.0;
            if meta[0] != 0.0 {
                let grads = self.recv_f32(self.rank - 1, TAG_GRADS)?;
                sum = Some(Part {
                    grads,
                    loss: meta[1],
                    correct: meta[2],
                });
            }
        }
        for part in mine {
            sum = Some(match sum {
                None => part,
                Some(mut s) => {
                    anyhow::ensure!(
                        s.grads.len() == part.grads.len(),
                        "rank {}: gradients of {} values arrived where {} were computed",
                        self.rank,
                        s.grads.len(),
                        part.grads.len()
                    );
                    for (a, b) in s.grads.iter_mut().zip(&part.grads) {
                        *a += *b;
                    }
                    s.loss += part.loss;
                    s.correct += part.correct;
                    s
                }
            });
        }
        let last = self.size - 1;
        if self.rank < last {
            let flag = f64::from(u8::from(stop));
            let meta = match &sum {
                Some(s) => [1.0, s.loss, s.correct, flag],
                None => [0.0, 0.0, 0.0, flag],
            };
            self.send_f64(self.rank + 1, TAG_META, &meta)?;
            if let Some(s) = &sum {
                self.send_f32(self.rank + 1, TAG_GRADS, &s.grads)?;
            }
        }
        // The last rank holds the total: every step has at least one part.
        let mut meta = match (&sum, self.rank == last) {
            (Some(s), true) => vec![s.loss, s.correct, f64::from(u8::from(stop))],
            (None, true) => anyhow::bail!("a step with no micro-batch on any rank"),
            _ => vec![0.0; 3],
        };
        self.broadcast_f64(last, &mut meta)?;
        let mut grads = match sum {
            Some(s) if self.rank == last => s.grads,
            _ => Vec::new(),
        };
        self.broadcast_f32(last, &mut grads)?;
        Ok(Total {
            grads,
            loss: meta[0],
            correct: meta[1],
            stop: meta[2] != 0.0,
        })
    }

    /// `bytes` of the leader (rank 0), on every rank.
    pub fn share(&self, bytes: Option<Vec<u8>>) -> Result<Vec<u8>> {
        let mut len = vec![bytes.as_ref().map_or(0.0, |b| b.len() as f64)];
        self.broadcast_f64(0, &mut len)?;
        let mut buf = bytes.unwrap_or_else(|| vec![0; len[0] as usize]);
        self.broadcast_bytes(0, &mut buf)?;
        Ok(buf)
    }

    /// Every rank's `digest`, in rank order.
    pub fn gather_digests(&self, digest: [u8; 32]) -> Result<Vec<[u8; 32]>> {
        self.all_gather_32(digest)
    }

    /// Ends the whole job with `code` (every rank stops).
    pub fn abort(&self, code: i32) -> ! {
        #[cfg(feature = "mpi")]
        {
            self.mpi.abort(code)
        }
        #[cfg(not(feature = "mpi"))]
        {
            let _ = code;
            match self.never {}
        }
    }

    /// Blocks until the other ranks join (or the job ends).
    pub fn barrier(&self) {
        #[cfg(feature = "mpi")]
        self.mpi.barrier();
        #[cfg(not(feature = "mpi"))]
        match self.never {}
    }
}

// The messages, in one place per build: MPI, or nothing (no group exists).
#[cfg(feature = "mpi")]
impl Group {
    fn send_f32(&self, to: usize, tag: i32, v: &[f32]) -> Result<()> {
        self.mpi.send(to, tag, v);
        Ok(())
    }
    fn send_f64(&self, to: usize, tag: i32, v: &[f64]) -> Result<()> {
        self.mpi.send(to, tag, v);
        Ok(())
    }
    fn recv_f32(&self, from: usize, tag: i32) -> Result<Vec<f32>> {
        Ok(self.mpi.recv(from, tag))
    }
    fn recv_f64(&self, from: usize, tag: i32) -> Result<Vec<f64>> {
        Ok(self.mpi.recv(from, tag))
    }
    fn broadcast_f32(&self, root: usize, v: &mut Vec<f32>) -> Result<()> {
        let mut len = [v.len() as f64];
        self.mpi.broadcast(root, &mut len[..]);
        v.resize(len[0] as usize, 0.0);
        self.mpi.broadcast(root, &mut v[..]);
        Ok(())
    }
    fn broadcast_f64(&self, root: usize, v: &mut [f64]) -> Result<()> {
        self.mpi.broadcast(root, v);
        Ok(())
    }
    fn broadcast_bytes(&self, root: usize, v: &mut [u8]) -> Result<()> {
        self.mpi.broadcast(root, v);
        Ok(())
    }
    fn all_gather_32(&self, digest: [u8; 32]) -> Result<Vec<[u8; 32]>> {
        let all = self.mpi.all_gather(&digest[..], self.size);
        Ok(all
            .chunks(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect())
    }
}

#[cfg(not(feature = "mpi"))]
impl Group {
    fn send_f32(&self, _: usize, _: i32, _: &[f32]) -> Result<()> {
        match self.never {}
    }
    fn send_f64(&self, _: usize, _: i32, _: &[f64]) -> Result<()> {
        match self.never {}
    }
    fn recv_f32(&self, _: usize, _: i32) -> Result<Vec<f32>> {
        match self.never {}
    }
    fn recv_f64(&self, _: usize, _: i32) -> Result<Vec<f64>> {
        match self.never {}
    }
    fn broadcast_f32(&self, _: usize, _: &mut Vec<f32>) -> Result<()> {
        match self.never {}
    }
    fn broadcast_f64(&self, _: usize, _: &mut [f64]) -> Result<()> {
        match self.never {}
    }
    fn broadcast_bytes(&self, _: usize, _: &mut [u8]) -> Result<()> {
        match self.never {}
    }
    fn all_gather_32(&self, _: [u8; 32]) -> Result<Vec<[u8; 32]>> {
        match self.never {}
    }
}

/// A Slurm job step of several tasks started without an MPI plugin (plain
/// `srun -n 4` where the site's MpiDefault is none): MPI would fail to
/// start, so say how to start it instead.
#[cfg(feature = "mpi")]
fn check_slurm_step() -> Result<()> {
    let var = |name: &str| std::env::var_os(name).is_some();
    let tasks: usize = std::env::var("SLURM_STEP_NUM_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let wired = ["PMIX_RANK", "PMI_RANK", "PMI_FD", "OMPI_COMM_WORLD_RANK"]
        .iter()
        .any(|v| var(v));
    if tasks > 1 && !wired {
        crate::bail_input!(
            "srun started {tasks} tasks without an MPI plugin, so their MPI cannot connect them: start them with \
             srun --mpi=pmix (or --mpi=pmi2; `srun --mpi=list` lists them), set MpiDefault=pmix in slurm.conf, \
             or run mpirun -n {tasks} inside the allocation"
        );
    }
    Ok(())
}

/// The block of `parts` that rank `rank` of `size` takes.
pub fn block(rank: usize, size: usize, parts: usize) -> std::ops::Range<usize> {
    (rank * parts / size)..((rank + 1) * parts / size)
}

/// One micro-batch's (or a running sum's) gradients, flattened, with its
/// loss and its images predicted right.
pub struct Part {
    pub grads: Vec<f32>,
    pub loss: f64,
    pub correct: f64,
}

/// A step's sum over every rank.
pub struct Total {
    pub grads: Vec<f32>,
    pub loss: f64,
    pub correct: f64,
    /// Rank 0 was asked to stop (Ctrl-C, SIGTERM) before this step's sum.
    pub stop: bool,
}

#[cfg(feature = "mpi")]
mod mpi_engine {
    use anyhow::Result;
    use mpi::Rank;
    use mpi::datatype::Equivalence;
    use mpi::environment::Universe;
    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::traits::*;

    /// The MPI job: its universe (finalised when dropped) and world.
    pub struct Mpi {
        _universe: Universe,
        world: SimpleCommunicator,
    }

    impl Mpi {
        pub fn init() -> Result<Mpi> {
            // Only the thread that trains sends and receives; the worker
            // threads never touch MPI.
            let Some((universe, _)) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            else {
                anyhow::bail!("MPI was already initialised in this process");
            };
            let world = universe.world();
            Ok(Mpi {
                _universe: universe,
                world,
            })
        }

        /// (rank, size, ranks on this machine).
        pub fn ranks(&self) -> (usize, usize, usize) {
            let local = self.world.split_shared(self.world.rank()).size();
            (
                self.world.rank() as usize,
                self.world.size() as usize,
                local as usize,
            )
        }

        pub fn send<T: Equivalence>(&self, to: usize, tag: i32, v: &[T]) {
            self.world.process_at_rank(to as Rank).send_with_tag(v, tag);
        }

        pub fn recv<T: Equivalence>(&self, from: usize, tag: i32) -> Vec<T> {
            self.world
                .process_at_rank(from as Rank)
                .receive_vec_with_tag::<T>(tag)
                .0
        }

        pub fn broadcast<T: Equivalence>(&self, root: usize, v: &mut [T]) {
            self.world.process_at_rank(root as Rank).broadcast_into(v);
        }

        pub fn all_gather(&self, v: &[u8], size: usize) -> Vec<u8> {
            let mut all = vec![0u8; v.len() * size];
            self.world.all_gather_into(v, &mut all[..]);
            all
        }

        pub fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }

        pub fn barrier(&self) {
            self.world.barrier();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::block;

    #[test]
    fn blocks_cover_every_part_once_in_order() {
        for size in 1..6 {
            for parts in 0..20 {
                let blocks: Vec<_> = (0..size).map(|r| block(r, size, parts)).collect();
                assert_eq!(blocks[0].start, 0);
                assert_eq!(blocks[size - 1].end, parts);
                for w in blocks.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let lens: Vec<usize> = blocks.iter().map(|b| b.len()).collect();
                let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
                assert!(hi - lo <= 1, "{size} ranks, {parts} parts: {lens:?}");
            }
        }
        assert_eq!(block(1, 2, 4), 2..4);
    }
}
