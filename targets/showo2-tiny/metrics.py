"""Image comparison: MAE, PSNR and windowed SSIM on luma, each judged against the target's thresholds."""

import numpy as np

WINDOW = 7
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def box(x: np.ndarray) -> np.ndarray:
    """Means over every WINDOW x WINDOW window (valid positions only)."""
    windows = np.lib.stride_tricks.sliding_window_view(x, (WINDOW, WINDOW))
    return windows.mean(axis=(-1, -2))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    x, y = luma(a), luma(b)
    mx, my = box(x), box(y)
    vx, vy, cov = box(x * x) - mx**2, box(y * y) - my**2, box(x * y) - mx * my
    index = ((2 * mx * my + C1) * (2 * cov + C2)) / ((mx**2 + my**2 + C1) * (vx + vy + C2))
    return float(index.mean())


def judge(candidate: np.ndarray, reference: np.ndarray, thresholds: dict) -> tuple[list[str], str]:
    """Failures as 'metric value op threshold' (empty when all pass), and a summary of the values."""
    if candidate.shape != reference.shape:
        return [f"size {candidate.shape} != {reference.shape}"], ""
    values = {"mae": mae(candidate, reference), "psnr": psnr(candidate, reference), "ssim": ssim(candidate, reference)}
    failures = []
    if values["mae"] > thresholds["mae_max"]:
        failures.append(f"mae {values['mae']:.3f} > {thresholds['mae_max']}")
    if values["psnr"] < thresholds["psnr_min"]:
        failures.append(f"psnr {values['psnr']:.2f} < {thresholds['psnr_min']}")
    if values["ssim"] < thresholds["ssim_min"]:
        failures.append(f"ssim {values['ssim']:.4f} < {thresholds['ssim_min']}")
    return failures, " ".join(f"{k} {v:.4g}" for k, v in values.items())
