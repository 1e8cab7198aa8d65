"""Sites: one detector configuration per site, and the bound on how many there are.

A site is a farm (or a test rig) whose turbines share one sensor schema.  The
wire metadata names it (``site``, ``"default"`` when the producer says
nothing); the Kafka detector keeps one model family per (partition, site),
each scored with its site's configuration.  The configuration file names the
known sites in ``[sites.NAME]`` tables::

    max_sites = 8            # at most this many sites per partition (label bound)
    false_alarm_rate = 1e-4  # top level: the default site, and unknown sites

    [sites.skab]             # inline: the top-level settings, overridden here
    min_samples = 200

    [sites.lhb]              # a whole file (relative to this one), overridden here
    config = "la-haute-borne.toml"

A site not named gets the top-level settings (its sensors fixed by its first
batch), while fewer than ``max_sites`` sites are known in its partition; then
its records are dead letters ``too_many_sites``.  Site names are path
segments of the store (``STORE/sites/NAME/partition-NNNN``), so they are
restricted to ``[A-Za-z0-9_.-]``, at most 64 characters, not starting with a dot.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import DetectorConfig, make_config
from pipeline.errors import ConfigError

DEFAULT_SITE = "default"
DEFAULT_MAX_SITES = 8
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")


def site_store(root: str | Path, site: str = DEFAULT_SITE) -> Path:
    """Where a Kafka detector keeps a site's partition stores under its store ``root``.

    >>> site_store("st"), site_store("st", "lhb")
    (PosixPath('st'), PosixPath('st/sites/lhb'))
    """
    return Path(root) if site == DEFAULT_SITE else Path(root) / "sites" / site


def valid_site(name: str) -> bool:
    """Whether ``name`` can be a site (a store path segment, a bounded label).

    >>> valid_site("lhb"), valid_site("la-haute_borne.2"), valid_site("../x"), valid_site("")
    (True, True, False, False)
    """
    return _NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class SiteConfigs:
    """The default configuration, the configured sites' own, and ``max_sites``.

    >>> sc = SiteConfigs(DetectorConfig(), {"lhb": DetectorConfig(false_alarm_rate=1e-6)})
    >>> sc.config_of("lhb").false_alarm_rate, sc.config_of("elsewhere").false_alarm_rate
    (1e-06, 0.0001)
    >>> sc.known
    ('default', 'lhb')
    """

    default: DetectorConfig
    sites: dict[str, DetectorConfig] = field(default_factory=dict)
    max_sites: int = DEFAULT_MAX_SITES

    def __post_init__(self) -> None:
        bad = [s for s in self.sites if not valid_site(s)]
        if bad:
            raise ConfigError(
                f"sites.{bad[0]}: a site name is letters, digits, '_', '-', '.' (at most 64)"
            )
        if self.max_sites < 1:
            raise ConfigError(f"max_sites {self.max_sites}: at least 1")
        if len(self.known) > self.max_sites:
            raise ConfigError(
                f"{len(self.known)} sites configured (with {DEFAULT_SITE!r}) but max_sites "
                f"is {self.max_sites}"
            )

    @property
    def known(self) -> tuple[str, ...]:
        """The sites named in configuration, the default site first."""
        return (DEFAULT_SITE, *sorted(s for s in self.sites if s != DEFAULT_SITE))

    def config_of(self, site: str) -> DetectorConfig:
        return self.sites.get(site, self.default)

    def admits(self, site: str, present: set[str] | dict) -> bool:
        """Whether a partition holding sites ``present`` may take ``site`` as well.

        Configured sites always may: room is kept for them under ``max_sites``.
        """
        if site in present or site in self.known:
            return True
        return len(set(present) | set(self.known)) < self.max_sites


def _read(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the configuration must be a table/object of settings")
    return raw


def split_sites(raw: dict, source: str) -> tuple[dict, dict, int]:
    """(the top-level settings, the ``sites`` tables, ``max_sites``) of a raw configuration."""
    raw = dict(raw)
    sites = raw.pop("sites", {}) or {}
    max_sites = raw.pop("max_sites", DEFAULT_MAX_SITES)
    if not isinstance(sites, dict) or not all(isinstance(v, dict) for v in sites.values()):
        raise ConfigError(f"{source}: sites: one table of settings per site ([sites.NAME])")
    if not isinstance(max_sites, int) or isinstance(max_sites, bool):
        raise ConfigError(f"{source}: max_sites: an integer, not {max_sites!r}")
    return raw, sites, max_sites


def site_raw(base: dict, table: dict, directory: Path, source: str) -> dict:
    """A site's raw settings: its ``config`` file (or the top level), then its own keys."""
    table = dict(table)
    ref = table.pop("config", None)
    if ref is None:
        return {**base, **table}
    if not isinstance(ref, str):
        raise ConfigError(f"{source}: config: a file name, not {ref!r}")
    path = directory / ref
    inner, nested, _ = split_sites(_read(path), str(path))
    if nested:
        raise ConfigError(f"{path}: a site's configuration cannot name sites of its own")
    return {**inner, **table}


def load_sites(raw: dict, directory: Path, source: str, **overrides: object) -> SiteConfigs:
    """Every site's configuration from a raw configuration (``overrides`` apply to all)."""
    from pipeline.config import normalise_raw

    base, tables, max_sites = split_sites(raw, source)
    given = {k: v for k, v in overrides.items() if v is not None}
    default = make_config(normalise_raw({**base, **given}, source), source)
    sites = {}
    for name, table in tables.items():
        where = f"{source}: sites.{name}"
        merged = site_raw(base, table, directory, where)
        sites[str(name)] = make_config(normalise_raw({**merged, **given}, where), where)
    try:
        return SiteConfigs(default, sites, max_sites)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
