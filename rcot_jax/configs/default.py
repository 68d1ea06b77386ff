"""RCOT training configuration shared by the task configs (`configs/<task>.py` override the data).

`''`: the official training settings (README of xl-tang3/RCOT: Restormer map, batch 3, patch 128, RMSprop,
critic lr 1e-4, map lr 5e-5, x0.1 every 20 epochs, lambda_F 1, lambda_pair 1e4, lambda_GP 10, fully paired),
with the paper's Fourier cost (`loss.fourier_variant='official'` reproduces the official trainer's).
`'quick'`: a small MPRNet map and a narrow critic that visibly restore within minutes on a 2-core CPU.
`'tiny'`: the same architecture, narrower and shallower (one block per scale, no refinement blocks), small enough
for CPU tests.
"""
import ml_collections

# One epoch of Rain100L x360 repeats at batch 3 (the official deraining run); 51 epochs, decay every 20.
_OFFICIAL_STEPS_PER_EPOCH = 24_000


def set_epochs(c, steps_per_epoch, epochs=51, decay_every_epochs=20):
    """The official schedule in train steps: `epochs` epochs, learning rates x0.1 every `decay_every_epochs`."""
    c.num_train_steps = epochs * steps_per_epoch
    c.optim.decay_every_steps = decay_every_epochs * steps_per_epoch


def get_config(arg=None):
    arg = arg or ""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.init_from = ""                          # a fresh run starts from the T and F parameters of this converted
                                              # (rcot_jax.convert) or trained checkpoint: a workdir, its
                                              # checkpoints/ or a step directory, or a weights file (.pth,
                                              # .safetensors; convert --export's); '' = fresh initialisation

    c.model = ml_collections.ConfigDict()
    c.model.backbone = "restormer"            # 'restormer' (official trainer) | 'mprnet' (paper, pretrained weights)
    c.model.two_pass = True                   # False: the single-pass backbone (ablation baseline)
    c.model.cond_scale = 0.8
    c.model.restormer = dict(dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4, heads=(1, 2, 4, 8),
                             ffn_expansion_factor=2.66)
    c.model.mprnet = dict(n_feat=80, scale_unetfeats=48, reduction=4,
                          cabs_per_scale=2)   # CABs at each scale of the encoders and the decoder
    c.model.critic_width = 64                 # channels of the critic's first convolution (official: 64)
    c.model.remat = "full"                    # 'none' | 'full' | 'dots': recompute transformer blocks / CABs in
                                              # the backward pass: the paper's settings need 22 GB of XLA
                                              # buffers without it, 2.8 GB with it (same update, ~1/3 more compute);
                                              # 'dots' keeps their convolutions' and matmuls' outputs
    c.model.conv_impl = "auto"                # 'auto' (custom on CPU, xla on GPU and TPU) | 'xla': XLA's convolutions
                                              # and gradients | 'custom': models/conv.py's, tuned for XLA:CPU
    c.model.critic_fc_features = 0            # width of the critic's `fc`; 0: patch_size**2 / 8 (Net_Restormer),
                                              # 2048: the MPRNet file's critic (Net.py, patch 256)

    c.data = ml_collections.ConfigDict()
    c.data.task = "deblur"                    # see rcot_jax.configs.TASKS
    c.data.noise_sigma = 25                   # 15 | 25 | 50, for 'denoise' ('allinone' names levels in mix)
    c.data.mix = ("haze", "rain", "noise15", "noise25", "noise50")    # degradations 'allinone' draws from;
                                              # 'tfds:NAME' entries are prepared datasets (their own pairs)
    c.data.mix_weights = ()                   # one weight per mix entry; () = equal
    c.data.blur_kernel_size = 15              # camera-shake kernels span up to this many pixels
    c.data.source = "embedded"                # 'embedded' (sample photographs) | 'clean_folder' | 'paired_folders' |
                                              # 'unpaired_folders' | 'tfds' (a dataset made by rcot_jax.prepare)
    c.data.train_dir = ""                     # clean_folder (or embedded, which it then replaces): a folder of
                                              # clean images, degraded on the fly
    c.data.eval_dir = ""                      # held-out clean images ('' = the embedded held-out photographs)
    c.data.degraded_dir = ""                  # paired/unpaired_folders: degraded training images
    c.data.target_dir = ""                    # ... and their targets (unpaired: unrelated clean images)
    c.data.match = ""                         # paired: 'DEGRADED -> TARGET' name templates, e.g.
                                              # 'rain-{id} -> norain-{id}'; '' = the same relative path
    c.data.file_list = ""                     # paired: a text file naming the degraded images to use
    c.data.eval_degraded_dir = ""             # paired/unpaired_folders: the test pairs (same data.match)
    c.data.eval_target_dir = ""
    c.data.name = ""                          # tfds: gopro | rain100l | ... (rcot_jax.data.catalog.LAYOUTS)
    c.data.data_dir = ""                      # tfds: where it was prepared ('' = TFDS's default)
    c.data.split = "train"
    c.data.eval_split = "test"
    c.data.eval_name = ""                     # tfds: the dataset to evaluate on ('' = data.name), e.g. cbsd68
                                              # for a bsd400_wed run
    c.data.eval_limit = 0                     # > 0: evaluate only the first eval_limit held-out items
    c.data.bad_files = "error"                # unreadable / unmatched files: 'error' (stop, naming them) | 'skip'
    c.data.patch_size = 128                   # the critic only accepts patch_size x patch_size inputs
    c.data.batch_size = 3                     # global, over all devices and processes
    c.data.paired_fraction = 1.0              # 1: all paired; 0: unpaired (independent targets); between: a
                                              # fixed subset of the training images is paired
    c.data.num_workers = 0                    # grain worker processes (0: threads of this process)
    c.data.prefetch = 8                       # batches prepared ahead
    c.data.eval_size = 256                    # held-out crops are eval_size x eval_size
    c.data.eval_crops = 4                     # crops per held-out clean image (fixed positions and degradations);
                                              # 0 = whole images. Paired test sets are always whole images
    c.data.eval_bucket = 64                   # whole images are reflect-padded to multiples of this (one
                                              # compiled shape per bucket) and cropped back
    c.data.eval_batch_size = 8                # images per evaluation forward pass

    c.eval = ml_collections.ConfigDict()
    c.eval.metric_profile = "rgb"             # 'rgb' | 'y' | 'allinone' | 'rcot_official' | 'nafnet'
                                              # (rcot_jax.metrics): the PSNR/SSIM of eval.jsonl, TensorBoard and
                                              # --mode=eval
    c.eval.crop_border = 0                    # pixels cropped from every side before scoring ('y' for SR: 4)
    c.eval.save_images = True                 # --mode=eval writes the restored images too
    c.eval.step = 0                           # --mode=eval: the checkpoint step to evaluate (0 = the latest)

    c.loss = ml_collections.ConfigDict()
    c.loss.fourier_variant = "paper"          # 'paper' | 'official' (x/2 precedence bug, batch sum) | 'off'
                                              # (ablation: no Fourier term, the cost is the RMSE alone)
    c.loss.fourier_p = 0                      # exponent of the Fourier term: 0 = by degradation (2 for Gaussian
                                              # noise, 1 otherwise); 1 or 2 forces it (ablation)
    c.loss.lambda_f = 1.0
    c.loss.lambda_pair = 1e4
    c.loss.lambda_gp = 10.0

    c.critic = ml_collections.ConfigDict()
    c.critic.enabled = True                   # False (ablation): no critic updates and no adversarial term, a
                                              # pure transport cost + paired L1 map
    c.critic.gp_update = "separate"           # 'separate': two optimiser steps (official) | 'joint': one
    c.critic.n_critic = 1

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "rmsprop"                  # 'rmsprop' | 'adam', both with PyTorch semantics
    c.optim.lr_critic = 1e-4
    c.optim.lr_map = 5e-5
    c.optim.decay_factor = 0.1
    c.optim.accumulate_steps = 1              # k > 1: each update sums k sequential micro-batches (less memory)
    set_epochs(c, _OFFICIAL_STEPS_PER_EPOCH)

    c.precision = "float32"                   # 'float32' | 'bf16': convolutions and matmuls in bfloat16,
                                              # parameters, optimiser states, FFT and reductions in float32 |
                                              # 'float64' (with JAX_ENABLE_X64=1): for numerical comparisons

    c.sweep = ml_collections.ConfigDict()     # rcot_jax.ablate: variants trained together by jax.vmap
    c.sweep.axis = ""                         # '' | 'seed' | a scalar of steps.SWEEPABLE, e.g. 'model.cond_scale'
    c.sweep.axis_values = ()                  # its values, one variant each
    c.sweep.seeds = ()                        # every value is trained with each of these seeds (() = config.seed)

    c.parallel = ml_collections.ConfigDict()
    c.parallel.wrapper = "shard_map"          # 'shard_map' | 'pmap'

    c.log_every_steps = 100
    c.eval_every_steps = 5000
    c.checkpoint_every_steps = 5000
    c.keep_checkpoints = 3
    c.num_sample_images = 4                   # rows of the sample grid written at every evaluation

    if arg in ("quick", "tiny"):
        c.model.remat = "none"                # small enough to keep every activation
    if arg == "quick":
        c.num_train_steps = 2000
        c.model.backbone = "mprnet"           # on a CPU, far faster per pixel than the Restormer map
        c.model.mprnet = dict(n_feat=16, scale_unetfeats=8, reduction=4, cabs_per_scale=2)
        c.model.critic_width = 8
        c.data.patch_size = 32                # many small steps learn faster per CPU-second than few large
        c.data.batch_size = 8
        c.data.eval_size = 128
        c.optim.name = "adam"
        c.optim.lr_map = 2e-3
        c.optim.decay_every_steps = 1500
        c.eval_every_steps = 500
        c.checkpoint_every_steps = 500
    elif arg == "tiny":
        c.num_train_steps = 3
        c.model.restormer = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=0, heads=(1, 1, 2, 2),
                                 ffn_expansion_factor=2.66)
        c.model.mprnet = dict(n_feat=8, scale_unetfeats=4, reduction=4, cabs_per_scale=1)
        c.model.critic_width = 16
        c.data.patch_size = 32
        c.data.batch_size = 8
        c.data.eval_size = 32
        c.data.eval_crops = 1
        c.optim.decay_every_steps = 2
        c.log_every_steps = 1
        c.eval_every_steps = 3
        c.checkpoint_every_steps = 2
        c.num_sample_images = 2
    elif arg:
        raise ValueError(f"configs/default.py: unknown variant {arg!r}, expected '', 'quick' or 'tiny'")
    return c
