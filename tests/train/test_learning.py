"""Proof that training learns: a tiny UNet on frames of sun.mp4 (prepared by `musetalk train prepare`)
drives the masked-mouth reconstruction error on held-out frames well below its step-0 value."""
import logging

from musetalk.train.config import load_config
from musetalk.train.loop import Trainer

log = logging.getLogger(__name__)

STEPS = 60


def test_stage1_learns_the_mouth_on_held_out_frames(tiny_models, sun_data, tmp_path):
    overrides = [f"models_dir={tiny_models}", f"data_dir={sun_data}", f"output_dir={tmp_path}", "data.image_size=128",
                 "data.batch_size=8", "data.min_face_size=0", "data.holdout_fraction=0.2", "loss.vgg=0",
                 "solver.learning_rate=3e-3", "solver.lr_scheduler=constant", "solver.lr_warmup_steps=0",
                 "solver.gradient_checkpointing=false", f"solver.max_train_steps={STEPS}",
                 f"validation_steps={STEPS}", "validation_frames=16", f"checkpointing_steps={STEPS}"]
    trainer = Trainer(load_config(1, overrides=overrides), progress=False)
    before = trainer.validation_error(16)
    trainer.train()
    after = trainer.validation_error(16)
    log.warning("held-out masked-mouth L1 (0..255): step 0 %.1f -> step %d %.1f", before, STEPS, after)
    assert after < 0.7 * before, (before, after)
