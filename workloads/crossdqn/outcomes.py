"""Outcomes of logged screens by simulation: ``FeedSim`` on a screen rebuilt from its observation.

The serving graph logs, per feed request, the allocation stage's observation (``alloc_obs``: the
flat vector of ``obs_layout``: profile, history, the K ads' and the K organic items' features
``[content, value / 5, bid, present]``, context) and its action, but no outcome. Where no event
stream is joined (tests, demos, a first turn of the loop) and the user asks for it (``adray data
import crossdqn-log ... --option simulate_outcomes=true``; never by default, and the manifest and
the console then say how many rows were simulated), :func:`fill_outcomes` rebuilds from each
row a one-screen :class:`~workloads.crossdqn.sim.Requests` and plays the logged action with
``FeedSim.step``, which gives reward, ``r_ad``, ``r_fee``, ``r_ex`` and orders as the simulator
defines them (Eq. 2). Vectorised over rows; deterministic in ``seed`` and the row order.

Taken from the observation as it is: the items' content, order value (5 x the value feature), bids and
which of them exist (``present``), the user's profile and history. Estimated, because the simulator
keeps them hidden (the importer cannot know them):

* taste ``pref`` (a unit vector): the normalised mean of the history rows. The simulator draws each
  row as ``0.8·pref + N(0, 0.6²)``, so the direction is noisy (with hist_len 8 the mean's noise is
  ~0.2 per dimension against ~0.4 of signal; cosine to the true taste 0.90 on average); an all-zero
  history gives ``pref = 0``;
* ad tolerance: ``profile[0]``, the noisy tolerance the simulator shows (std ``tolerance_noise``),
  clipped to [0, 1]; activity: ``profile[1]`` (shown exactly);
* click logits: ``base_ctr_logit + 0.5·activity + content·pref`` (the simulator's formula with the
  estimated taste); the ads' relevance (how much they annoy) is ``content·pref`` likewise;
* conversion rate: :data:`CVR_PRIOR` for every item, the mean of the simulator's prior
  ``σ(N(-1, 0.5²))`` (per-item rates are not observed);
* GSP price per click: the next ad's bid in the window, ``reserve_price`` for the window's last
  ad (the bid behind it is not in the observation, so a screen that shows all K ads under-charges
  its last one). The graph's bid feature is the ad's ecpm x ``alloc_bid_scale``; it is read as the
  simulator's per-click bid, whatever the units of the graph's bids are;
* the uniforms behind clicks, orders and leaving: fresh draws from ``seed``.

Position, arrangement, neighbour-similarity, tolerance and leave effects are then the simulator's
own (``FeedSim.arrange``). Each row is one screen alone: its lists hold only the window's items,
and what would follow the screen is not modelled (``r_ex`` counts ``1[the user stays] + orders``
as the simulator does, but the next screens' rewards are not there), which is why the importer
writes every row as a terminal transition.

Be clear about what this is: the simulator's user applied to the graph's observations with the
hidden quantities estimated as above, not any real user's response, and not the simulator's own
ground truth either (on the simulator's observations the reward differs from the simulator's by
these estimates and the fresh uniforms; measured on 20,000 first screens of the default simulator,
mean reward rebuilt vs simulator: 0.837 vs 0.849 with ads in slots 1 and 3, 0.493 vs 0.515 with no
ad, 0.612 vs 0.688 with five ads (r_ad 0.362 vs 0.433: the last ad charged the reserve); orders
come out ~7 % low, from the noisy taste). It is a consistent world for the loop (graph -> log ->
import -> train), in which the same function valued at other actions is the offline evaluator.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from workloads.crossdqn.config import FeedSimConfig
from workloads.crossdqn.sim import FeedSim, Requests, obs_layout

CVR_PRIOR = 0.2794
"""P(order | click) of every item: E[σ(z)], z ~ N(-1, 0.5²) (the simulator's prior, by quadrature)."""
OUTCOMES = ("reward", "r_ad", "r_fee", "r_ex", "orders", "ads")


def split_obs(obs: np.ndarray, cfg: FeedSimConfig) -> dict[str, np.ndarray]:
    """(n, obs_dim) observations -> blocks: profile (n, P), history (n, T, D), ads and organic
    (n, K, F), context (n, C)."""
    lo = obs_layout(cfg)
    k, f, d, t = lo["window"], lo["feat"], lo["item_dim"], lo["hist_len"]
    obs = np.asarray(obs, np.float64)
    if obs.ndim != 2 or obs.shape[1] != lo["obs_dim"]:
        raise ValueError(f"observations of shape {obs.shape}: expected (n, {lo['obs_dim']}) (obs_layout of the config)")
    sizes = [lo["profile"], t * d, k * f, k * f, lo["ctx"]]
    profile, hist, ads, org, ctx = np.split(obs, np.cumsum(sizes)[:-1], axis=1)
    n = len(obs)
    return {"profile": profile, "history": hist.reshape(n, t, d), "ads": ads.reshape(n, k, f),
            "organic": org.reshape(n, k, f), "context": ctx}


def present_counts(obs: np.ndarray, cfg: FeedSimConfig) -> tuple[np.ndarray, np.ndarray]:
    """Ads and organic items present in each screen's window, (n,) each."""
    b = split_obs(obs, cfg)
    return (b["ads"][..., -1] > 0.5).sum(1), (b["organic"][..., -1] > 0.5).sum(1)


def rebuild(obs: np.ndarray, cfg: FeedSimConfig, seed: int) -> FeedSim:
    """A simulator positioned at the screens of ``obs`` (n, obs_dim): see the module docstring.

    Its lists are the window's K ads and K organic items; a block with m < K present items puts
    them last and starts the list's pointer at K - m, so the simulator sees the list run out where
    the observation does.

    Raises:
        ValueError: wrong width, a non-finite value, present flags that are not a prefix of the
            block, or a screen with fewer than K items in all (the simulator cannot fill it).
    """
    blocks = split_obs(obs, cfg)
    if not all(np.isfinite(v).all() for v in blocks.values()):
        raise ValueError("observations: non-finite values")
    k, d = cfg.slots, cfg.item_dim
    n = len(blocks["profile"])
    screen = dataclasses.replace(cfg, n_ads=k, n_organic=k)
    content, value, shift = {}, {}, {}
    for kind, name in (("ad", "ads"), ("org", "organic")):
        feats = blocks[name]  # (n, K, F)
        present = feats[..., -1] > 0.5
        m = present.sum(1)
        bad = np.flatnonzero((present != (np.arange(k)[None, :] < m[:, None])).any(1))
        if len(bad):
            raise ValueError(f"row {bad[0]}: the {name} block's present flags {feats[bad[0], :, -1].tolist()} are not "
                             f"a prefix (items after an absent one); {len(bad)} such row(s)")
        src = np.clip(np.arange(k)[None, :] - (k - m)[:, None], 0, k - 1)  # (n, K): list position -> block row
        feats = np.take_along_axis(feats, src[..., None], axis=1)
        content[kind], value[kind], shift[kind] = feats[..., :d], 5.0 * feats[..., d], k - m
    short = np.flatnonzero(2 * k - shift["ad"] - shift["org"] < k)
    if len(short):
        raise ValueError(f"row {short[0]}: {2 * k - shift['ad'][short[0]] - shift['org'][short[0]]} item(s) for a "
                         f"screen of {k} slots; {len(short)} such row(s)")
    profile, hist = blocks["profile"], blocks["history"]
    mean = hist.mean(1)  # (n, D)
    norm = np.linalg.norm(mean, axis=1, keepdims=True)
    pref = np.divide(mean, norm, out=np.zeros_like(mean), where=norm > 1e-12)
    tol = np.clip(profile[:, 0], 0.0, 1.0)
    rel = {kind: np.einsum("nkd,nd->nk", c, pref) for kind, c in content.items()}  # (n, K)
    logit = {kind: cfg.base_ctr_logit + 0.5 * profile[:, 1:2] + r for kind, r in rel.items()}
    bid = blocks["ads"][..., d + 1]
    bid = np.take_along_axis(bid, np.clip(np.arange(k)[None, :] - shift["ad"][:, None], 0, k - 1), axis=1)
    price = np.concatenate([bid[:, 1:], np.full((n, 1), cfg.reserve_price)], axis=1)  # GSP; reserve for the last
    cvr = {kind: np.full((n, k), CVR_PRIOR) for kind in content}
    rng = np.random.default_rng(seed)
    u_click, u_order, u_leave = rng.uniform(size=(n, 1, k)), rng.uniform(size=(n, 1, k)), rng.uniform(size=(n, 1))
    req = Requests(pref, tol, profile, hist, content, value, cvr, logit, rel["ad"], bid, price,
                   u_click, u_order, u_leave)
    sim = FeedSim(screen, req)
    sim.ad_ptr[:], sim.org_ptr[:] = shift["ad"], shift["org"]
    return sim


def fill_outcomes(obs: np.ndarray, actions: np.ndarray, cfg: FeedSimConfig, seed: int) -> dict[str, np.ndarray]:
    """The outcome of showing each screen of ``obs`` (n, obs_dim) with ``actions`` (n,): reward
    (Eq. 2 with ``cfg.eta``), r_ad, r_fee, r_ex, orders and ads shown, (n,) each.

    The same ``seed`` draws the same uniforms whatever the actions, so calls that differ only in
    ``actions`` compare policies on common random numbers.
    """
    actions = np.asarray(actions, np.int64)
    if actions.shape != (len(obs),) or ((actions < 0) | (actions >= cfg.num_actions)).any():
        raise ValueError(f"actions: expected {len(obs)} integers in [0, {cfg.num_actions})")
    out = rebuild(obs, cfg, seed).step(np.arange(len(obs)), actions)
    return {key: out[key] for key in OUTCOMES}
