"""Show-o2 text-to-image through the user's checkout of the official repository (github.com/showlab/Show-o,
folder show-o2): the same calls as its inference_t2i.py, one prompt at a time, with a seeded noise.

Environment: SHOWO2_REPO (the show-o2 folder of the checkout), SHOWO2_VAE (Wan2.1_VAE.pth; default: in SHOWO2_REPO),
SHOWO2_CONFIG (default configs/showo2_1.5b_demo_512x512.yaml), SHOWO2_DEVICE (default mps when available, else cpu).
"""

import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def checkout() -> Path:
    repo = os.environ.get("SHOWO2_REPO", "")
    if not repo or not (Path(repo) / "inference_t2i.py").is_file():
        raise SystemExit("set SHOWO2_REPO to the show-o2 folder of a github.com/showlab/Show-o checkout")
    return Path(repo).resolve()


class Pipeline:
    def __init__(self, model: Path):
        repo = checkout()
        sys.path.insert(0, str(repo))
        from models import Showo2Qwen2_5, WanVAE
        from models.misc import get_text_tokenizer
        from omegaconf import OmegaConf
        from utils import get_hyper_params, path_to_llm_name

        default = "mps" if torch.backends.mps.is_available() else "cpu"
        self.device = torch.device(os.environ.get("SHOWO2_DEVICE", default))
        self.config = OmegaConf.load(repo / os.environ.get("SHOWO2_CONFIG", "configs/showo2_1.5b_demo_512x512.yaml"))
        self.config.model.showo.pretrained_model_path = str(model)
        showo = self.config.model.showo
        self.tokenizer, token_ids = get_text_tokenizer(
            showo.llm_model_path,
            add_showo_tokens=True,
            return_showo_token_ids=True,
            llm_name=path_to_llm_name[showo.llm_model_path],
        )
        showo.llm_vocab_size = len(self.tokenizer)
        self.dtype = torch.bfloat16 if self.config.model.weight_type == "bfloat16" else torch.float32
        self.model = Showo2Qwen2_5.from_pretrained(str(model), use_safetensors=False).to(self.device).to(self.dtype)
        self.model.eval()
        vae = os.environ.get("SHOWO2_VAE", str(repo / "Wan2.1_VAE.pth"))
        self.vae = WanVAE(vae_pth=vae, dtype=self.dtype, device=self.device)
        if showo.add_time_embeds:
            self.config.dataset.preprocessing.num_image_tokens += 1
        self.params = get_hyper_params(self.config, self.tokenizer, token_ids)

    @torch.inference_mode()
    def generate(self, prompt: str, seed: int, steps: int, guidance: float) -> Image.Image:
        from models import omni_attn_mask_naive
        from models.misc import prepare_gen_input
        from transport import Sampler, create_transport
        from utils import denorm

        (
            num_image_tokens,
            _,
            max_seq_len,
            max_text_len,
            latent_dim,
            patch,
            width,
            height,
            pad_id,
            bos_id,
            eos_id,
            boi_id,
            eoi_id,
            _,
            _,
            img_pad_id,
            _,
            _,
        ) = self.params
        tokens, null, positions, null_positions = prepare_gen_input(
            [prompt],
            self.tokenizer,
            num_image_tokens,
            bos_id,
            eos_id,
            boi_id,
            eoi_id,
            pad_id,
            img_pad_id,
            max_text_len,
            self.device,
        )
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn((1, latent_dim, height * patch, width * patch), generator=generator)
        z = torch.cat([z, z]).to(self.dtype).to(self.device)
        text_tokens, modality = torch.cat([tokens, null]), torch.cat([positions, null_positions])
        mask = omni_attn_mask_naive(2, max_seq_len, modality, self.device).to(self.dtype)
        t = self.config.transport
        transport = create_transport(
            path_type=t.path_type,
            prediction=t.prediction,
            loss_weight=t.loss_weight,
            train_eps=t.train_eps,
            sample_eps=t.sample_eps,
            snr_type=t.snr_type,
            do_shift=t.do_shift,
            seq_len=num_image_tokens,
        )
        sample = Sampler(transport).sample_ode(
            sampling_method=t.sampling_method,
            num_steps=steps,
            atol=t.atol,
            rtol=t.rtol,
            reverse=t.reverse,
            time_shifting_factor=t.time_shifting_factor,
        )
        latents = sample(
            z,
            self.model.t2i_generate,
            text_tokens=text_tokens,
            attention_mask=mask,
            modality_positions=modality,
            output_hidden_states=True,
            max_seq_len=max_seq_len,
            guidance_scale=guidance,
        )[-1]
        images = self.vae.batch_decode(latents[:1].unsqueeze(2)).squeeze(2)
        return Image.fromarray(np.asarray(denorm(images)[0]))
