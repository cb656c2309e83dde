"""A user's existing Ray Train loop (AdamW, gradient clipping, label smoothing, its own model and data),
profiled by scaleprof. Only the lines marked `# scaleprof` differ from the plain Ray Train version."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

from scaleprof import session  # scaleprof


def make_data(seed: int, samples: int = 6000, features: int = 32, classes: int = 5):
    generator = torch.Generator().manual_seed(seed)
    centers = 0.3 * torch.randn(classes, features, generator=generator)
    y = torch.randint(0, classes, (samples,), generator=generator)
    x = centers[y] + torch.randn(samples, features, generator=generator)
    return random_split(TensorDataset(x, y), [0.8, 0.2], generator=generator)


def build_model(features: int = 32, hidden: int = 128, classes: int = 5) -> nn.Module:
    return nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, classes))


def train_func(config):
    settings = config["loop_config"]
    torch.manual_seed(config["seed"])
    train_set, test_set = make_data(config["seed"])
    model = build_model(hidden=settings.get("hidden", 128))
    model = session.prepare_model(
        model, example_input=train_set[0][0][None]
    )  # scaleprof (was ray.train.torch.prepare_model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.get("lr", 3e-3), weight_decay=0.01)
    loader = DataLoader(train_set, batch_size=config["batch_size"], shuffle=True)
    loader = session.prepare_data_loader(loader)  # scaleprof (was ray.train.torch.prepare_data_loader)
    device = session.device()

    for _ in session.epochs():  # scaleprof (was range(config["epochs"]))
        model.train()
        for x, y in session.steps(loader):  # scaleprof (was loader)
            loss = F.cross_entropy(model(x), y, label_smoothing=settings.get("label_smoothing", 0.1))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.get("clip", 1.0))
            optimizer.step()
            session.report_loss(loss)  # scaleprof (optional: the training loss curve)

    if session.world_rank() == 0:  # scaleprof (optional: every quality metric, from held-out predictions)
        model.eval()
        with torch.no_grad():
            x, y = (torch.stack(t) for t in zip(*[(a, torch.as_tensor(b)) for a, b in test_set]))
            proba = torch.softmax(model(x.to(device)), dim=1)
        session.report_predictions(y, proba)
