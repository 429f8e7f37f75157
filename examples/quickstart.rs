//! catbert as a library: fine-tune all-MiniLM-L6-v2 on the bundled product sample, then
//! predict the top-3 categories of a few texts with the kept checkpoint.
//!
//!     scripts/fetch-model.sh && cargo run --release --example quickstart
use std::path::Path;

use catbert::checkpoint::ModelRef;
use catbert::data::Table;
use catbert::infer::{PredictOptions, Predictor};
use catbert::train::{Finetune, FinetuneConfig, OutputMode};

fn main() -> anyhow::Result<()> {
    catbert::runtime::init(None); // all cores
    let out = Path::new("checkpoints/quickstart");

    // Settings: defaults are the PyTorch reference's; change what differs.
    let config = FinetuneConfig {
        model: "models/all-MiniLM-L6-v2".into(),
        text_col: "product_description".into(),
        label_col: Some("Category".into()),
        ..FinetuneConfig::default()
    };
    let job = Finetune::new(config)?;

    // Prepare (labels, hold-out split, class weights, tokens, model), then fit.
    let train = Table::read(Path::new("datasets/products-sample/train.csv"), None)?;
    // Overwrite: replace an earlier quickstart run there (New would refuse it).
    let prepared = job.prepare(&train, None, out, OutputMode::Overwrite)?;
    println!("classes: {}", prepared.summary.classes.join(", "));
    let outcome = job.fit(prepared, &mut [])?;
    let best = outcome.meta.best_record().expect("an epoch ran");
    let holdout = best.holdout.as_ref().expect("10 % held out");
    println!(
        "epoch {}: hold-out accuracy {:.3}, f1_min {:.3}",
        best.epoch, holdout.accuracy, holdout.f1_min
    );

    // Predict with the checkpoint the run kept.
    let model = ModelRef::parse(&out.to_string_lossy());
    let predictor = Predictor::load(&model, Default::default(), PredictOptions::default())?;
    let texts = ["organic whole milk 1 gallon", "paper towels 12 rolls"];
    for (text, top) in texts.iter().zip(predictor.predict(&texts, 3)?) {
        let shown: Vec<String> = top.iter().map(|(l, p)| format!("{l} {p:.2}")).collect();
        println!("{text}: {}", shown.join(" | "));
    }
    Ok(())
}
