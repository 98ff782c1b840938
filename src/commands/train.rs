//! `cnn train`: a new run (config and flags → checked plan → data → a new
//! run directory) or the continuation of one (`--resume`: everything from
//! its `last.safetensors`), then the same path for both: model, optimizer,
//! the training loop and a summary on stdout.

use super::thousands;
use crate::arch::Plan;
use crate::checkpoint::{self, Checkpoint};
use crate::cli::TrainArgs;
use crate::config::{Config, Normalize};
use crate::data::{Batcher, Dataset, LoadOptions, Normalization, Splits};
use crate::device;
use crate::distributed::Group;
use crate::fsutil::write_atomic;
use crate::memory;
use crate::model::{Model, Weights};
use crate::optim::Optimizer;
use crate::progress::{Mode, Progress};
use crate::run_dir::RunDir;
use crate::settings::{self, Resolved, Resume};
use crate::status;
use crate::train::ema::Ema;
use crate::train::{self, Learner, RunContext, RunState};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

pub fn run(args: &TrainArgs) -> Result<()> {
    // Ctrl-C and SIGTERM: finish the step, save and stop (see `interrupt`).
    let stop = crate::interrupt::install().context("installing the Ctrl-C handler")?;
    if args.flags.fresh_optimizer && args.resume.is_none() {
        crate::bail_input!(
            "--fresh-optimizer starts the optimizer afresh when resuming; give it with --resume RUN_DIR \
             (a new run always starts afresh)"
        );
    }
    let group = match args.flags.distributed {
        Some(engine) => Some(Group::join(engine)?),
        None => None,
    };
    let group = group.as_ref();
    // The other ranks print nothing but their errors.
    let quiet = args.flags.quiet || group.is_some_and(|g| !g.is_leader());
    let mut progress = Progress::new(Mode::detect(quiet));
    if let Some(g) = group {
        join_note(g, &mut progress);
    }
    let job = Job { group, quiet };
    let result = match &args.resume {
        Some(dir) => resume(args, &job, dir, stop, &mut progress),
        None => fresh(args, &job, stop, &mut progress),
    };
    match (group, result) {
        (Some(g), Err(err)) => end_job(g, err),
        (_, result) => result,
    }
}

/// Where this process stands in its run: alone, or one rank of a group.
struct Job<'a> {
    group: Option<&'a Group>,
    /// Print nothing but errors (`--quiet`, or a rank other than 0).
    quiet: bool,
}

impl Job<'_> {
    /// The only process, or rank 0: the one that writes.
    fn writes(&self) -> bool {
        self.group.is_none_or(|g| g.is_leader())
    }
}

/// A distributed run's first words, and each rank's share of the cores:
/// without `--threads` (or RAYON_NUM_THREADS), the machine's cores divided
/// among the ranks on it.
fn join_note(group: &Group, progress: &mut Progress) {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let threads = match std::env::var("RAYON_NUM_THREADS") {
        Ok(n) => n.parse().unwrap_or(1),
        Err(_) => {
            let n = (cores / group.local_ranks()).max(1);
            // Fails only if the pool was already built, which it is not yet.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global();
            n
        }
    };
    if group.size() == 1 {
        progress.note(
            "--distributed mpi: this process is the job's only rank (it was not started by mpirun or srun), \
             so it trains alone",
        );
    } else {
        progress.note(&format!(
            "distributed over {} ranks ({} on this machine, {threads} thread(s) each); rank 0 writes the run \
             directory and evaluates",
            group.size(),
            group.local_ranks()
        ));
    }
}

/// A distributed run that failed on this rank: the message, then the whole
/// job ended with its exit code, so that no rank waits forever for this
/// one. Errors every rank meets (a bad config, a divergence) are printed
/// by rank 0 alone: the others give it a moment to end the job first. An
/// interruption is no failure: every rank stops after the same step.
fn end_job(group: &Group, err: anyhow::Error) -> Result<()> {
    let code = crate::error::exit_code(&err);
    if code == crate::error::exit::INTERRUPTED {
        return Err(err);
    }
    if !group.is_leader() {
        std::thread::sleep(std::time::Duration::from_secs(3));
        eprintln!("error (rank {} of {}): {err:#}", group.rank(), group.size());
    } else {
        eprintln!("error: {err:#}");
    }
    group.abort(code)
}

/// `--out`, or `runs/<config name>`.
fn run_dir_path(args: &TrainArgs, config: &Config) -> Result<PathBuf> {
    if let Some(out) = &args.out {
        return Ok(out.clone());
    }
    let name = config.display_name();
    let plain = Path::new(name)
        .file_name()
        .is_some_and(|f| f == std::ffi::OsStr::new(name));
    if !plain || name.contains('\\') {
        crate::bail_input!(
            "the config's \"name\" ({name:?}) cannot name a directory under runs/ (it holds a path \
             separator or is . or ..); pass --out RUN_DIR or give the config a plain name"
        );
    }
    Ok(Path::new("runs").join(name))
}

fn load_options<'a>(args: &'a TrainArgs, classes: Option<&'a [String]>) -> LoadOptions<'a> {
    LoadOptions {
        data_dir: args.flags.data.data_dir.as_deref(),
        test_dir: None,
        no_download: args.flags.data.no_download,
        classes,
        quiet: args.flags.quiet,
        test_only: false,
    }
}

/// `--show-config`: the resolved config on stdout, nothing run.
fn show_config(config: &Config) {
    println!("{}", config.to_pretty_json());
}

/// The data of `config`, its notes shown.
fn load_data(config: &Config, opts: &LoadOptions, progress: &mut Progress) -> Result<Dataset> {
    let dataset = Dataset::for_config(config, opts)?;
    for note in &dataset.notes {
        progress.note(note);
    }
    Ok(dataset)
}

/// A new run: every check and the data before the run directory is made,
/// so that a mistake leaves nothing behind.
fn fresh(args: &TrainArgs, job: &Job, stop: &AtomicBool, progress: &mut Progress) -> Result<()> {
    let Some(config_path) = &args.config else {
        crate::bail_input!("cnn train needs --config FILE (or --resume RUN_DIR to continue a run)");
    };
    let Resolved {
        mut config,
        plan,
        notes,
    } = settings::new_run(config_path, &args.flags.choices.sets, &args.flags)?;
    if args.show_config {
        show_config(&config);
        return Ok(());
    }
    for w in plan.warnings.iter().chain(&notes) {
        progress.note(&format!("warning: {w}"));
    }
    let out = run_dir_path(args, &config)?;
    if job.writes() {
        RunDir::check_new(&out, args.force)?;
    }
    let device = device::open(args.flags.device.device)?;
    let transfer = source_weights(&mut config, &plan)?;
    let dataset = load_data(&config, &load_options(args, None), progress)?;
    let splits = dataset.splits(&config)?;
    let steps = train::steps_per_epoch(&config, splits.train.len())? as u64;
    let total = steps * config.training.epochs as u64;
    if let Some(ema) = config.training.ema
        && ema.every > total
    {
        progress.note(&format!(
            "warning: training.ema.every is {}, more than the run's {total} steps, so the average \
             is never updated and evaluation sees the initial weights; lower it",
            ema.every
        ));
    }
    // With the data in memory: what is left must hold the run.
    memory::check(
        &plan,
        &config,
        splits.sizes(),
        memory::Shape::of(&device),
        args.flags.no_memory_check,
    )?;
    let normalization = Normalization::resolve(&config.data.normalize, &splits.train)?;
    // The config records what the data came to (directories, split sizes,
    // statistics), so that eval and resume rebuild exactly the same.
    config.data.dir = (!dataset.from_hub).then(|| dataset.dir.clone());
    if let Some(t) = &config.data.test_dir {
        config.data.test_dir = Some(t.canonicalize().unwrap_or_else(|_| t.clone()));
    }
    splits.record_sizes(&mut config.data);
    config.data.normalize = Normalize::Given {
        mean: normalization.mean.clone(),
        std: normalization.std.clone(),
    };

    let model = new_model(
        &config,
        &plan,
        &splits,
        &normalization,
        transfer.as_ref(),
        &device,
        progress,
    )?;
    if let Some(group) = job.group {
        check_batch(&config, &model, group)?;
        check_agreement(group, &config, &splits, &model, 0)?;
    }
    let mut state = RunState::new();
    state.ranks = job.group.map(|g| g.size());
    let run_id = state.run_id.clone();
    let run = |run_dir: &RunDir, progress: &mut Progress| {
        let learner = learner(&config, model, None)?;
        let run = Run {
            config: &config,
            dataset: &dataset,
            splits: &splits,
            normalization: &normalization,
            run_dir,
            stop,
            quiet: job.quiet,
            group: job.group,
        };
        run.train("training", learner, state, progress)
    };
    if !job.writes() {
        // The other ranks write nothing, and train beside rank 0.
        return run(&RunDir::follower(&out), progress).map(|_| ());
    }
    let run_dir = RunDir::create(&out, args.force)?;
    with_status(&run_dir, &run_id, || run(&run_dir, progress))
}

/// A global batch the ranks can share: an equal number of images each and,
/// where one process cuts the batch into micro-batches, at least one per
/// rank.
fn check_batch(config: &Config, model: &Model, group: &Group) -> Result<()> {
    let (n, bs) = (group.size(), config.training.batch_size);
    if n == 1 {
        return Ok(());
    }
    if !bs.is_multiple_of(n) {
        crate::bail_input!(
            "training.batch_size is {bs}, which {n} ranks cannot share evenly: the batch size is the global \
             batch, over all ranks; make it a multiple of {n} (--batch-size {})",
            bs.div_ceil(n) * n
        );
    }
    let micro = train::MICRO_BATCH;
    let parts = bs.div_ceil(micro);
    if model.device().is_cpu() && !model.needs_whole_batch() && parts < n {
        crate::bail_input!(
            "training.batch_size is {bs}: {parts} micro-batch(es) of about {micro} images, the unit the ranks \
             share, so {n} ranks would leave some with nothing to do; use a batch of at least {} images \
             (--batch-size) or fewer ranks",
            micro * n
        );
    }
    Ok(())
}

/// Every rank has the same config (its file paths aside), the same training
/// images in the same order and the same starting weights (and, resuming,
/// the same step): refused at the start, naming the rank that differs.
fn check_agreement(
    group: &Group,
    config: &Config,
    splits: &Splits,
    model: &Model,
    step: u64,
) -> Result<()> {
    use sha2::{Digest, Sha256};
    let mut value = config.to_value();
    if let Some(data) = value.get_mut("data").and_then(|d| d.as_object_mut()) {
        data.remove("dir");
        data.remove("test_dir");
    }
    if let Some(t) = value.get_mut("training").and_then(|d| d.as_object_mut()) {
        t.remove("init_from");
    }
    let mut h = Sha256::new();
    h.update(value.to_string().as_bytes());
    h.update(step.to_le_bytes());
    let settings: [u8; 32] = h.finalize().into();
    let train = &splits.train;
    let mut h = Sha256::new();
    match &train.set.files {
        None => h.update(&train.set.pixels),
        // Photos read as they are used: their class folder, name and size
        // (the folder itself may sit elsewhere on each node).
        Some(files) => {
            for path in files.paths() {
                for part in path.iter().rev().take(2) {
                    h.update(part.as_encoded_bytes());
                }
                h.update(std::fs::metadata(path).map_or(0, |m| m.len()).to_le_bytes());
            }
        }
    }
    for label in &train.set.labels {
        h.update(label.to_le_bytes());
    }
    for i in &train.indices {
        h.update(i.to_le_bytes());
    }
    let data: [u8; 32] = h.finalize().into();
    let mut h = Sha256::new();
    for (name, t) in model.tensors() {
        h.update(name.as_bytes());
        let values = t
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        for v in values {
            h.update(v.to_le_bytes());
        }
    }
    let weights: [u8; 32] = h.finalize().into();
    // The data first: other images change the config's statistics too.
    let what = [
        (data, "training images (or split)"),
        (settings, "settings (or, resuming, step)"),
        (weights, "starting weights"),
    ];
    for (digest, what) in what {
        let all = group.gather_digests(digest)?;
        if let Some(r) = all.iter().position(|d| *d != all[0]) {
            crate::bail_input!(
                "rank {r} of {} has other {what} than rank 0: every rank must run the same command on the \
                 same files (the same config, data directory and --init-from); check the paths rank {r} \
                 sees on its machine",
                group.size()
            );
        }
    }
    Ok(())
}

/// The weights `training.init_from` gives the network (its path made
/// absolute in the config, which records it).
pub(crate) fn source_weights(
    config: &mut Config,
    plan: &Plan,
) -> Result<Option<train::transfer::Transfer>> {
    let Some(path) = config.training.init_from.clone() else {
        return Ok(None);
    };
    // An hf:// address is fetched into the hub's cache and recorded as given.
    let local = crate::data::hub::weights_file(&path, "training.init_from", false)?;
    let transfer = train::transfer::load(&local, plan)
        .with_context(|| format!("training.init_from {}", path.display()))?;
    if local == path {
        config.training.init_from = Some(path.canonicalize().unwrap_or(path));
    }
    Ok(Some(transfer))
}

/// A new run's network: initialised from the seed, then the tensors taken
/// from `training.init_from`, then the layers initialised from the data
/// (those not taken).
pub(crate) fn new_model(
    config: &Config,
    plan: &Plan,
    splits: &Splits,
    normalization: &Normalization,
    transfer: Option<&train::transfer::Transfer>,
    device: &candle_core::Device,
    progress: &mut Progress,
) -> Result<Model> {
    let seed = config.training.seed;
    let model = Model::new(plan, Weights::Init { seed }, device)?;
    if let (Some(t), Some(path)) = (transfer, &config.training.init_from) {
        model.assign(&t.tensors)?;
        progress.note(&t.summary(path));
    }
    if let Some(note) = train::fine_tune_note(config, plan) {
        progress.note(&note);
    }
    let batcher = Batcher::new(normalization, device);
    let taken = |name: &str| transfer.is_some_and(|t| t.tensors.contains_key(name));
    for note in crate::model::whiten::whiten(&model, &splits.train, &batcher, seed, taken)? {
        progress.note(&note);
    }
    Ok(model)
}

/// The model, its optimizer and, with `training.ema`, the average of its
/// weights (from `average`, when a run is resumed).
fn learner(
    config: &Config,
    model: Model,
    average: Option<&std::collections::HashMap<String, candle_core::Tensor>>,
) -> Result<Learner> {
    let optim = Optimizer::for_run(model.plan(), model.params().to_vec(), &config.training)?;
    let ema = match config.training.ema {
        Some(settings) => Some(Ema::new(settings, &model, average)?),
        None => None,
    };
    Ok(Learner { model, optim, ema })
}

/// Continues the run in `dir` from its `last.safetensors`, with the config
/// it stored; only the flags outside the `new_run` group apply.
fn resume(
    args: &TrainArgs,
    job: &Job,
    dir: &Path,
    stop: &AtomicBool,
    progress: &mut Progress,
) -> Result<()> {
    if !args.new_run_flags.is_empty() {
        crate::bail_input!(
            "--resume continues {} exactly as it was configured, so {} cannot be used with it (it would \
             change the model, the data or the run directory). Start a new run with --config and --out \
             instead; with --resume only {} may be given",
            dir.display(),
            args.new_run_flags.join(", "),
            crate::cli::resumable_train_flags().join(", ")
        );
    }
    if args.show_config {
        // Read only: no lock taken, nothing written.
        let ck = checkpoint::load(&dir.join(crate::run_dir::LAST))
            .context("reading the checkpoint to resume from")?;
        let config = match &ck.meta.state {
            Some(state) => {
                match settings::resume(dir, &ck.meta.config, state, (&args.flags).into())? {
                    Resume::Continue(r) => r.config,
                    Resume::Finished(_) => ck.meta.config,
                }
            }
            None => ck.meta.config,
        };
        show_config(&config);
        return Ok(());
    }
    // Rank 0 takes the directory's lock; the other ranks only read it.
    let run_dir = match job.writes() {
        true => RunDir::reopen(dir)?,
        false => RunDir::follower(dir),
    };
    let last = run_dir.last();
    let ck = checkpoint::load(&last).context("reading the checkpoint to resume from")?;
    let Some(state) = ck.meta.state.clone() else {
        crate::bail_input!(
            "{} holds no training state (it is not a run's last.safetensors); resume from a run directory",
            last.display()
        );
    };
    if !job.writes() {
        return resume_in(args, job, &run_dir, ck, state, stop, progress).map(|_| ());
    }
    run_dir.check_same_run(&ck.meta.config)?;
    check_run_id(&run_dir, &state.run_id)?;
    with_status(&run_dir, &state.run_id.clone(), || {
        resume_in(args, job, &run_dir, ck, state, stop, progress)
    })
}

fn resume_in(
    args: &TrainArgs,
    job: &Job,
    run_dir: &RunDir,
    ck: Checkpoint,
    mut state: RunState,
    stop: &AtomicBool,
    progress: &mut Progress,
) -> Result<Option<String>> {
    let dir = run_dir.path();
    let Resolved { config, plan, .. } =
        match settings::resume(dir, &ck.meta.config, &state, (&args.flags).into())? {
            Resume::Continue(r) => *r,
            Resume::Finished(why) => {
                progress.note(&format!(
                    "nothing to resume: {} {why}; pass a larger --epochs to train further",
                    dir.display()
                ));
                return Ok(Some(format!("nothing to resume: {why}")));
            }
        };
    let device = device::open(args.flags.device.device)?;
    let dataset = load_data(
        &config,
        &load_options(args, Some(&ck.meta.classes)),
        progress,
    )?;
    let splits = dataset.splits(&config)?;
    memory::check(
        &plan,
        &config,
        splits.sizes(),
        memory::Shape::of(&device),
        args.flags.no_memory_check,
    )?;
    let last = run_dir.last();
    // With an average of the weights, `layers.*` is the average and the
    // trained weights are `raw.layers.*`.
    let with_ema = config.training.ema.is_some();
    if with_ema && ck.raw.is_empty() {
        crate::bail_input!(
            "{} lacks the trained weights (raw.layers.*) that a run with training.ema saves beside \
             their average; it was not written by this run",
            last.display()
        );
    }
    let trained = if with_ema { &ck.raw } else { &ck.weights };
    let model = Model::new(&plan, Weights::Tensors(trained), &device)
        .with_context(|| format!("checkpoint {}", last.display()))?;
    let mut learner = learner(&config, model, with_ema.then_some(&ck.weights))
        .with_context(|| format!("checkpoint {}", last.display()))?;
    // Without its optimizer state the run would silently become another
    // one: refused unless asked for.
    match learner.optim.missing_state(&ck.optimizer, state.step) {
        Some(name) if !args.flags.fresh_optimizer => crate::bail_input!(
            "{} has no optimizer state (tensor {name} is missing), so resuming would not continue the \
             same run; pass --fresh-optimizer to continue with the optimizer started afresh",
            last.display()
        ),
        Some(_) => progress.note("the optimizer starts afresh (--fresh-optimizer)"),
        None => learner
            .optim
            .load_state(&ck.optimizer, state.step)
            .with_context(|| format!("optimizer state in {}", last.display()))?,
    }
    if let Some(group) = job.group {
        check_batch(&config, &learner.model, group)?;
        check_agreement(group, &config, &splits, &learner.model, state.step)?;
    }
    check_ranks(&mut state, job, &learner.model, dir, progress)?;
    if job.writes() {
        crate::history::write(dir, &state.history)?;
    }
    let what = format!(
        "resuming at epoch {}, step {} of the run",
        state.epochs_done + 1,
        state.step
    );
    let run = Run {
        config: &config,
        dataset: &dataset,
        splits: &splits,
        normalization: &ck.meta.normalization,
        run_dir,
        stop,
        quiet: job.quiet,
        group: job.group,
    };
    run.train(&what, learner, state, progress)
}

/// A run resumed on as many ranks as it was trained on, unless the number
/// does not change its numbers (networks without batch norm, on the CPU,
/// where the micro-batches are the same for any number of ranks).
fn check_ranks(
    state: &mut RunState,
    job: &Job,
    model: &Model,
    dir: &Path,
    progress: &mut Progress,
) -> Result<()> {
    let before = state.ranks.unwrap_or(1);
    let now = job.group.map_or(1, |g| g.size());
    if before == now {
        return Ok(());
    }
    let why = if model.needs_whole_batch() {
        Some("its batch-norm statistics are computed per rank")
    } else if !model.device().is_cpu() {
        Some("off the CPU each rank runs its share of a batch in one piece")
    } else {
        None
    };
    let how = |n: usize| match n {
        1 => "cnn train".to_string(),
        n => format!("mpirun -n {n} cnn train --distributed mpi"),
    };
    if let Some(why) = why {
        crate::bail_input!(
            "{} was trained on {before} rank(s) and this is {now}: {why}, so it would not continue the same \
             run; resume it on {before}: {} --resume {}",
            dir.display(),
            how(before),
            dir.display()
        );
    }
    progress.note(&format!(
        "resuming a run of {before} rank(s) on {now}: for this network the numbers do not depend on the \
         number of ranks"
    ));
    state.ranks = (now > 1 || job.group.is_some()).then_some(now);
    Ok(())
}

/// Refuses a `last.safetensors` written by another run than the one whose
/// directory it is in (copied in by hand, say): its run id against the one
/// `status.json` (else `best.safetensors`) records. Resuming from it would
/// leave the directory's best checkpoint and history from one run and the
/// rest from the other. Runs from before run ids pass.
fn check_run_id(run_dir: &RunDir, last_id: &str) -> Result<()> {
    let recorded = status::read(run_dir.path())
        .and_then(|s| s.run_id)
        .or_else(|| {
            checkpoint::read_raw(&run_dir.best())
                .ok()
                .and_then(|(meta, _)| meta?.get("run_id").cloned())
        });
    match recorded {
        Some(id) if !last_id.is_empty() && id != last_id => crate::bail_input!(
            "{last} was written by another run (run id {last_id}) than the one in {dir} (run id {id}), \
             so resuming would mix the two runs' checkpoints and history. To start from its weights, \
             begin a new run: cnn train --config CONFIG --init-from {last} --out NEW_RUN_DIR",
            last = run_dir.last().display(),
            dir = run_dir.path().display()
        ),
        _ => Ok(()),
    }
}

/// Marks the run running in `status.json` while `body` runs, then records
/// how it ended.
fn with_status(
    run_dir: &RunDir,
    run_id: &str,
    body: impl FnOnce() -> Result<Option<String>>,
) -> Result<()> {
    let started = status::start(run_dir.path(), run_id)?;
    // A second Ctrl-C exits at once; the status says so.
    let (dir, at_start) = (run_dir.path().to_path_buf(), started.clone());
    crate::interrupt::on_forced_exit(Some(Box::new(move || status::forced_stop(&dir, &at_start))));
    let result = body();
    crate::interrupt::on_forced_exit(None);
    status::finish(run_dir.path(), &started, &result);
    result.map(|_| ())
}

/// What a run trains on and where it writes, new or resumed.
struct Run<'a> {
    config: &'a Config,
    dataset: &'a Dataset,
    splits: &'a Splits<'a>,
    normalization: &'a Normalization,
    run_dir: &'a RunDir,
    /// Set by Ctrl-C / SIGTERM.
    stop: &'a AtomicBool,
    quiet: bool,
    group: Option<&'a Group>,
}

impl Run<'_> {
    /// Writes the resolved config, runs the loop and prints the result;
    /// returns a note for `status.json` (early stopping).
    fn train(
        &self,
        what: &str,
        mut learner: Learner,
        state: RunState,
        progress: &mut Progress,
    ) -> Result<Option<String>> {
        let model = &learner.model;
        let (config, splits) = (self.config, self.splits);
        let writes = self.group.is_none_or(|g| g.is_leader());
        if writes {
            write_atomic(&self.run_dir.config(), config.to_pretty_json().as_bytes())?;
        }
        progress.note(&format!(
            "{what}: {} ({} parameters) on {}: {} train / {} val / {} test images, {} → {}",
            config.display_name(),
            thousands(model.plan().params()),
            self.dataset.name.name(),
            splits.train.len(),
            splits.val.len(),
            splits.test.len(),
            device::describe(model.device()),
            self.run_dir.path().display()
        ));
        if config.training.precision == crate::config::Precision::Bf16 && model.device().is_cpu() {
            progress.note(&crate::ops::kernels::bf16_note());
        }
        let batcher = Batcher::new(self.normalization, model.device());
        let ctx = RunContext {
            config,
            splits,
            batcher: &batcher,
            normalization: self.normalization,
            classes: &self.dataset.classes,
            run_dir: self.run_dir,
            stop: Some(self.stop),
            group: self.group,
        };
        crate::profile::enable_from_env();
        let result = train::fit(&ctx, &mut learner, progress, state);
        progress.finish();
        if let Some(table) = crate::profile::report() {
            let rank = self
                .group
                .map(|g| format!(", rank {} of {}", g.rank(), g.size()))
                .unwrap_or_default();
            eprintln!("time per phase and op (CNN_PROFILE{rank}):\n{table}");
        }
        let outcome = result?;

        if !self.quiet {
            let best = outcome
                .history
                .iter()
                .find(|r| r.epoch == outcome.best_epoch)
                .or(outcome.history.last());
            if let Some(best) = best
                && let (Some(acc), Some(loss)) = (best.test_acc, best.test_loss)
            {
                let val = best
                    .val_acc
                    .map(|a| format!("val acc {:.2}%, ", 100.0 * a))
                    .unwrap_or_default();
                println!(
                    "best epoch {}/{}: {val}test acc {:.2}% (test loss {:.4})",
                    best.epoch,
                    outcome.history.len(),
                    100.0 * acc,
                    loss
                );
            }
            println!("run directory: {}", self.run_dir.path().display());
            println!(
                "evaluate with: cnn eval --checkpoint {}",
                self.run_dir.best().display()
            );
        }
        let monitor = match splits.val.is_empty() {
            true => config.training.monitor.without_validation(),
            false => config.training.monitor,
        };
        Ok(outcome.stopped_early.then(|| {
            format!(
                "stopped early after epoch {}: {} had not improved for {} epoch(s)",
                outcome.history.len(),
                monitor.name(),
                config
                    .training
                    .early_stopping
                    .as_ref()
                    .map_or(1, |e| e.patience.max(1))
            )
        }))
    }
}
