"""Configuration: ``oraculo.toml`` plus ``ORACULO_<SECTION>_<KEY>`` environment overrides.

The file is ``--config``, else ``$ORACULO_CONFIG``, else ``./oraculo.toml`` when it exists
(:func:`~oraculo_trio.settings.loading.find_config`); every relative path it holds (and
every default path it leaves) is taken from its folder.

A ``[feed]`` table is one feed; several ``[[feed]]`` tables follow several Binance markets at
once (one table per market: ``feed.market``).

Every key is declared once, in :mod:`~oraculo_trio.settings.schema`, with its type, default,
allowed values and help text; the same declarations validate the file, parse environment
values (:mod:`~oraculo_trio.settings.loading`) and print the configuration reference in
``oraculo-trio run --help``. An unknown section or key is an error that names it, so a typo
never passes silently. :mod:`~oraculo_trio.settings.secrets` keeps passwords and tokens out of
messages.

Rule files are read by :mod:`oraculo_trio.pipeline.rules_source`.
"""

from oraculo_trio.settings.loading import (
    DEFAULT_CONFIG,
    ENV_CONFIG,
    ENV_NOT_CONFIG,
    ENV_PREFIX,
    configuration_reference,
    env_overrides,
    find_config,
    load_settings,
    rest_weight_budget,
)
from oraculo_trio.settings.schema import (
    DEPTH_STREAM_KINDS,
    FUTURES_STREAM_KINDS,
    LOG_FORMATS,
    LOG_LEVELS,
    SECTIONS,
    TRADE_STREAM_KINDS,
    ClusterSettings,
    DatabaseSettings,
    DispatchSettings,
    FeedSettings,
    HttpSettings,
    ObserveSettings,
    PipelineSettings,
    RulesSettings,
    ServiceSettings,
    Settings,
)
from oraculo_trio.settings.secrets import SECRET_KEYS, exposed_secrets, mask_url

__all__ = [
    "DEFAULT_CONFIG",
    "DEPTH_STREAM_KINDS",
    "ENV_CONFIG",
    "ENV_NOT_CONFIG",
    "ENV_PREFIX",
    "FUTURES_STREAM_KINDS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "SECRET_KEYS",
    "SECTIONS",
    "TRADE_STREAM_KINDS",
    "ClusterSettings",
    "DatabaseSettings",
    "DispatchSettings",
    "FeedSettings",
    "HttpSettings",
    "ObserveSettings",
    "PipelineSettings",
    "RulesSettings",
    "ServiceSettings",
    "Settings",
    "configuration_reference",
    "env_overrides",
    "exposed_secrets",
    "find_config",
    "load_settings",
    "mask_url",
    "rest_weight_budget",
]
