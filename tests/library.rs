//! catbert as a crate: predicting through `Predictor` alone, and fine-tuning through the
//! `Finetune` job with a callback that records what it saw and stops the run.

mod common;

use std::path::Path;
use std::sync::Arc;

use catbert::checkpoint::ModelRef;
use catbert::data::Table;
use catbert::device::DeviceChoice;
use catbert::infer::{PredictOptions, Predictor};
use catbert::train::{
    Callback, Control, EpochEnd, Finetune, FinetuneConfig, OutputMode, RunEnd, RunStart, Saved,
    Step,
};
use catbert::ErrorKind;
use common::*;

#[test]
fn predictor_alone_matches_transformers_and_is_shared_across_threads() {
    let dir = oracle().join("tiny");
    let expected = read_json(&dir.join("expected.json"));
    let texts = strings(&expected["texts"]);
    let logits = floats2(&expected["logits"]);
    let model = ModelRef::parse(dir.to_str().unwrap());
    let predictor =
        Arc::new(Predictor::load(&model, DeviceChoice::Cpu, PredictOptions::default()).unwrap());
    let got = predictor.predict(&texts, 3).unwrap();
    assert_eq!(got.len(), texts.len());
    for (row, want) in got.iter().zip(&logits) {
        let max = want.iter().copied().fold(f32::MIN, f32::max);
        let sum: f32 = want.iter().map(|l| (l - max).exp()).sum();
        let mut order: Vec<usize> = (0..want.len()).collect();
        order.sort_by(|&a, &b| want[b].total_cmp(&want[a]));
        assert_eq!(row.len(), 3);
        for ((label, p), &c) in row.iter().zip(&order) {
            assert_eq!(label, &predictor.labels()[c]);
            assert!(
                (p - (want[c] - max).exp() / sum).abs() < 1e-5,
                "{label}: {p}"
            );
        }
    }
    // Shared behind an Arc: threads get the same answers.
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (p, t) = (Arc::clone(&predictor), texts.clone());
            std::thread::spawn(move || p.predict(&t, 3).unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), got);
    }
    // A base model is not a classifier: a typed input error.
    let base = ModelRef::parse(minilm().to_str().unwrap());
    let err = Predictor::load(&base, DeviceChoice::Cpu, PredictOptions::default())
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Input);
}

/// Everything a callback was shown, in order.
#[derive(Default)]
struct Recorder {
    events: Vec<String>,
    stop_after: usize,
}

impl Callback for Recorder {
    fn on_start(&mut self, run: &RunStart) -> catbert::Result<()> {
        let labels = run.meta.labels.join("/");
        let what = format!("start {labels} epochs={}", run.config.hyper.epochs);
        self.events.push(what);
        Ok(())
    }
    fn on_step(&mut self, step: &Step) -> catbert::Result<Control> {
        assert!(step.mean_loss.is_finite() && step.lr >= 0.0);
        self.events.push(format!("step {}", step.global_step));
        Ok(Control::Continue)
    }
    fn on_epoch_end(&mut self, end: &EpochEnd, _: &mut Vec<Saved>) -> catbert::Result<Control> {
        self.events
            .push(format!("epoch {} best={}", end.record.epoch, end.is_best));
        Ok(if end.record.epoch == self.stop_after {
            Control::Stop("recorder says stop".into())
        } else {
            Control::Continue
        })
    }
    fn on_saved(&mut self, saved: &Saved) -> catbert::Result<()> {
        self.events
            .push(format!("saved {:?} {}", saved.kind, saved.epoch));
        Ok(())
    }
    fn on_end(&mut self, end: &RunEnd) -> catbert::Result<()> {
        self.events.push(format!("end {:?}", end.stopped));
        Ok(())
    }
}

fn job(epochs: usize, patience: Option<usize>, lr: f64, keep_state: bool) -> Finetune {
    let mut config = FinetuneConfig {
        model: oracle().join("tiny").to_str().unwrap().to_string(),
        device: DeviceChoice::Cpu,
        patience,
        keep_state,
        ..FinetuneConfig::default()
    };
    config.hyper.epochs = epochs;
    config.hyper.batch_size = 16;
    config.hyper.lr = lr;
    Finetune::new(config).unwrap()
}

#[test]
fn finetune_job_reports_to_callbacks_and_stops_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let train = Table::read(&synthetic(dir.path(), "train.csv", 96), None).unwrap();
    let out = dir.path().join("out");
    let job = job(3, None, 1e-3, true);
    let prepared = job.prepare(&train, None, &out, OutputMode::New).unwrap();
    assert_eq!(prepared.summary.classes, ["dairy", "drinks", "home"]);
    assert_eq!(
        (prepared.summary.train_rows, prepared.summary.holdout_rows),
        (87, 9)
    );
    let mut recorder = Recorder {
        stop_after: 1,
        ..Recorder::default()
    };
    let outcome = job.fit(prepared, &mut [&mut recorder]).unwrap();

    let steps: Vec<String> = (1..=6).map(|s| format!("step {s}")).collect();
    let mut want = vec!["start dairy/drinks/home epochs=3".to_string()];
    want.extend(steps);
    want.extend(
        [
            "epoch 1 best=true",
            "saved Best 1",
            "saved Metrics 1",
            "saved RunState 1",
            "end Some(\"recorder says stop\")",
        ]
        .map(String::from),
    );
    assert_eq!(recorder.events, want);
    assert_eq!(outcome.state.epochs_done, 1);
    assert_eq!(
        outcome.meta.stopped_early.as_deref(),
        Some("recorder says stop")
    );

    // What it kept is a checkpoint the Predictor loads, with the run's metadata.
    let model = ModelRef::parse(out.to_str().unwrap());
    let predictor = Predictor::load(&model, DeviceChoice::Cpu, PredictOptions::default()).unwrap();
    assert_eq!(predictor.labels(), ["dairy", "drinks", "home"]);
    assert_eq!(predictor.text_column(), Some("text"));
    let meta = predictor.meta().unwrap();
    assert_eq!((meta.best_epoch, meta.epochs.len()), (Some(1), 1));
    assert_eq!(predictor.predict(&["milk cheese"], 1).unwrap()[0].len(), 1);

    // A run that stopped is over: resuming it (its state was kept) trains nothing more.
    let prepared = job.prepare(&train, None, &out, OutputMode::Resume).unwrap();
    assert_eq!(prepared.summary.resumed_after, Some(1));
    let again = job.fit(prepared, &mut []).unwrap();
    assert_eq!(again.state, outcome.state);
}

#[test]
fn early_stopping_ends_a_run_that_stopped_improving() {
    let dir = tempfile::tempdir().unwrap();
    let train = Table::read(&synthetic(dir.path(), "train.csv", 60), None).unwrap();
    let out = dir.path().join("out");
    // A zero learning rate never improves on the first epoch: patience 1 stops after epoch 2.
    let job = job(5, Some(1), 0.0, false);
    let prepared = job.prepare(&train, None, &out, OutputMode::New).unwrap();
    let outcome = job.fit(prepared, &mut []).unwrap();
    assert_eq!(outcome.state.epochs_done, 2);
    assert_eq!(outcome.state.best_epoch, Some(1));
    let reason = outcome.stopped.unwrap();
    assert!(
        reason.starts_with("no improvement of f1_min for 1 epochs since epoch 1"),
        "{reason}"
    );
    let meta = read_json(&out.join("catbert.json"));
    assert_eq!(meta["stopped_early"].as_str(), Some(reason.as_str()));
    assert_eq!(meta["epochs"].as_array().unwrap().len(), 2);
    assert!(Path::new(&out.join("metrics.json")).is_file());
    assert!(
        outcome.state_removed && !out.join("run").exists(),
        "finished: state deleted"
    );
}

/// `near_tie` changes which epoch is kept, never the training: with a band wide enough that
/// every difference is a near tie, weighted F1 (then the loss) picks among the same epochs
/// the strict rule saw, and every later epoch carries the standard error of its difference.
#[test]
fn near_ties_go_to_weighted_f1_and_leave_training_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let train = Table::read(&synthetic(dir.path(), "train.csv", 400), None).unwrap();
    let run = |near_tie: f64| {
        let mut config = job(4, None, 1e-3, false).config().clone();
        config.hyper.near_tie = near_tie;
        let job = Finetune::new(config).unwrap();
        let out = dir.path().join(format!("out-{near_tie}"));
        let prepared = job.prepare(&train, None, &out, OutputMode::New).unwrap();
        job.fit(prepared, &mut []).unwrap().state
    };
    let (strict, near) = (run(0.0), run(1e6));
    let training = |h: &[catbert::train::EpochRecord]| -> Vec<(f64, Option<f64>)> {
        h.iter()
            .map(|e| (e.train_loss, e.holdout.as_ref().unwrap().loss))
            .collect()
    };
    assert_eq!(training(&strict.history), training(&near.history));
    for e in &near.history {
        assert_eq!(e.selection_se.is_some(), e.epoch > 1, "epoch {}", e.epoch);
        assert!(e.selection_se.unwrap_or(0.0) >= 0.0);
    }
    let mut best = 1;
    for e in 2..=near.history.len() {
        let now = near.history[e - 1].holdout.as_ref().unwrap();
        let then = near.history[best - 1].holdout.as_ref().unwrap();
        let first = now.f1_weighted.partial_cmp(&then.f1_weighted).unwrap();
        if first
            .then(then.loss.partial_cmp(&now.loss).unwrap())
            .is_gt()
        {
            best = e;
        }
    }
    assert_eq!(near.best_epoch, Some(best));
}

#[test]
fn settings_that_cannot_work_are_refused_by_name() {
    let mut config = FinetuneConfig::default();
    config.hyper.batch_size = 0;
    let err = Finetune::new(config).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Input);
    assert_eq!(
        err.to_string(),
        "`batch_size` 0 is out of range: must be at least 1"
    );
}
