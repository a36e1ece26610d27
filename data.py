"""Finding, decoding and batching the training images.

The layout is the book's: ``data/faces/*.jpg`` read as an ImageFolder with one class; a
folder that holds the images directly works too. Every image goes through the article's
transform: Resize(96), CenterCrop(96), ToTensor, Normalize(0.5, 0.5) -> [-1, 1].

Crawled folders hold broken files: anything that cannot be decoded is skipped and reported,
and images of any mode (grayscale, palette, RGBA, CMYK, 16-bit) become RGB.
"""
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from errors import UserError

EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}


def list_images(root):
    """Image files under ``root`` in the order ImageFolder uses; hidden files are skipped."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*")
                   if p.suffix.lower() in EXTENSIONS and not p.name.startswith(".")
                   and not any(part.startswith(".") for part in p.relative_to(root).parts[:-1]))
    if not files:
        raise UserError(f"no images in {root}: put the faces in {root / 'faces'}/ (jpg or png), "
                        f"or make a synthetic set with `python main.py toyfaces`")
    return files


def crop(image_size):
    """The article's geometry: shorter side to image_size, then the centre square."""
    return transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size)])


def open_rgb(path):
    """Decode any image file to an upright RGB PIL image; raises on unreadable files."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's palette/EXIF chatter
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode.startswith("I"):  # 16/32-bit grey: scale to 8 bits, not clip
                arr = np.asarray(img, dtype=np.float64)
                top = 65535.0 if arr.max() > 255 else 255.0
                img = Image.fromarray(np.clip(arr * 255.0 / top, 0, 255).astype(np.uint8), "L")
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                img = img.convert("RGBA")
                background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, img)
            return img.convert("RGB")


class FaceFolder(Dataset):
    """The article's pipeline: decode, Resize, CenterCrop and normalise on every access.

    Items are ``(image or None, path)``; None marks a file that could not be decoded.
    """

    def __init__(self, root, image_size=96):
        self.files = list_images(root)
        self.transform = transforms.Compose([
            crop(image_size), transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        path = self.files[index]
        try:
            return self.transform(open_rgb(path)), str(path)
        except Exception:  # noqa: BLE001 - any decoder failure means a broken file
            return None, str(path)


def collate(items):
    """Stack the good images; return the paths of the broken ones beside them."""
    good = [image for image, _ in items if image is not None]
    bad = [path for image, path in items if image is None]
    batch = torch.stack(good) if good else torch.empty(0, 3, 96, 96)
    return batch, bad


def folder_loader(opt, generator):
    """The book's DataLoader: shuffled, drop_last, ``num_workers`` decoding processes."""
    dataset = FaceFolder(opt.data_path, opt.image_size)
    if len(dataset) < opt.batch_size:
        raise UserError(f"{opt.data_path} has {len(dataset)} images, fewer than one batch: "
                        f"lower --batch-size (now {opt.batch_size})")
    return DataLoader(dataset, batch_size=opt.batch_size, shuffle=True, drop_last=True,
                      num_workers=opt.num_workers, collate_fn=collate, generator=generator,
                      persistent_workers=opt.num_workers > 0)
