"""Rooftop PV generation for prosumers: pvlib clear-sky model, 1-minute integer watts.

Purpose: give simulated prosumer households a plausible, deterministic PV
generation profile without downloading weather data.  The chain is:

1. sun position: ``pvlib.location.Location.get_solarposition`` (NREL SPA);
2. clear-sky irradiance: Ineichen/Perez with pvlib's *bundled* Linke
   turbidity climatology (``pvlib/data/LinkeTurbidities.h5``, read with
   h5py; no network access);
3. plane-of-array irradiance on a fixed tilted array (isotropic sky);
4. cell temperature (Faiman model, fixed air temperature and wind);
5. DC power by PVWatts (``pdc0 = kWp``, temperature coefficient
   ``gamma_pdc``), a flat system-loss factor, and the PVWatts inverter
   (AC limited to ``inverter_ratio * kWp``);
6. ``cloud_factor`` scales the irradiance: 1.0 is clear sky (an upper bound
   on real output); lower values give a dull-day profile.

Output (guarantee): ``np.int64`` watts >= 0 per minute, exactly zero when the
sun is below the horizon, positive around solar noon on any clear day with
``kwp > 0``.  Same inputs -> same output (no randomness).  Minutes are aligned
to UTC (``start_unix`` must be a whole minute).

Security assumption: none (public physics, no secrets).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privmeter.errors import InvalidArgument

__all__ = ["LONDON", "PvSystem", "Site", "clear_sky_ghi_w_m2", "pv_minute_w"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Site:
    """Where the houses are: latitude (deg N), longitude (deg E), altitude (m)."""

    latitude: float = 51.5
    longitude: float = -0.12
    altitude_m: float = 20.0

    def __post_init__(self) -> None:
        if not -90.0 <= self.latitude <= 90.0:
            raise InvalidArgument(f"latitude must be within [-90, 90], got {self.latitude!r}")
        if not -180.0 <= self.longitude <= 180.0:
            raise InvalidArgument(f"longitude must be within [-180, 180], got {self.longitude!r}")


LONDON = Site()  # the LCL trial's city, and the default site


@dataclass(frozen=True, slots=True, kw_only=True)
class PvSystem:
    """A fixed rooftop array.  Defaults: a typical UK south-facing domestic system."""

    kwp: float = 3.5  # DC nameplate at STC, kW
    tilt_deg: float = 35.0  # from horizontal
    azimuth_deg: float = 180.0  # 180 = facing south
    gamma_pdc: float = -0.004  # per K, crystalline silicon
    system_losses: float = 0.14  # wiring, soiling, mismatch (PVWatts default)
    inverter_ratio: float = 1.0  # AC rating / DC rating
    temp_air_c: float = 15.0  # constant ambient for the cell-temperature model
    wind_m_s: float = 1.0
    cloud_factor: float = 1.0  # 1.0 = clear sky

    def __post_init__(self) -> None:
        if not 0.0 <= self.kwp <= 1000.0:
            raise InvalidArgument(f"kwp must be within [0, 1000], got {self.kwp!r}")
        if not 0.0 <= self.tilt_deg <= 90.0:
            raise InvalidArgument(f"tilt_deg must be within [0, 90], got {self.tilt_deg!r}")
        if not 0.0 <= self.cloud_factor <= 1.0:
            raise InvalidArgument(f"cloud_factor must be within [0, 1], got {self.cloud_factor!r}")
        if not 0.0 <= self.system_losses < 1.0:
            raise InvalidArgument(
                f"system_losses must be within [0, 1), got {self.system_losses!r}"
            )
        if self.inverter_ratio <= 0.0:
            raise InvalidArgument(f"inverter_ratio must be positive, got {self.inverter_ratio!r}")


def _times(start_unix: int, minutes: int):  # type: ignore[no-untyped-def]
    import pandas as pd

    if start_unix % 60:
        raise InvalidArgument(f"start_unix must be a whole minute, got {start_unix!r}")
    if minutes < 0:
        raise InvalidArgument(f"minutes must be non-negative, got {minutes!r}")
    # mid-minute timestamps: the minute's average is closer to its centre
    return pd.date_range(
        pd.Timestamp(start_unix + 30, unit="s", tz="UTC"), periods=minutes, freq="1min"
    )


@contextmanager
def _quiet() -> Iterator[None]:
    """pvlib calls pandas APIs that pandas now deprecates; keep them out of our warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _clearsky(site: Site, start_unix: int, minutes: int):  # type: ignore[no-untyped-def]
    from pvlib.location import Location

    times = _times(start_unix, minutes)
    loc = Location(site.latitude, site.longitude, tz="UTC", altitude=site.altitude_m)
    solpos = loc.get_solarposition(times)
    cs = loc.get_clearsky(times, model="ineichen", solar_position=solpos)
    return solpos, cs


def clear_sky_ghi_w_m2(
    start_unix: int, minutes: int, *, site: Site = LONDON
) -> npt.NDArray[np.float64]:
    """Clear-sky global horizontal irradiance (W/m2) per minute (Ineichen, bundled turbidity)."""
    with _quiet():
        _solpos, cs = _clearsky(site, start_unix, minutes)
        ghi = np.asarray(cs["ghi"].to_numpy(dtype=np.float64))
    out: npt.NDArray[np.float64] = np.clip(np.nan_to_num(ghi, nan=0.0), 0.0, None)
    return out


def pv_minute_w(
    start_unix: int,
    minutes: int,
    *,
    system: PvSystem = PvSystem(),  # frozen, so a shared default is safe
    site: Site = LONDON,
) -> npt.NDArray[np.int64]:
    """AC generation in integer W per minute from ``start_unix`` (UTC), >= 0."""
    if minutes == 0 or system.kwp == 0.0:
        _times(start_unix, minutes)  # still validate
        return np.zeros(minutes, dtype=np.int64)
    from pvlib import inverter, irradiance, pvsystem, temperature

    with _quiet():
        solpos, cs = _clearsky(site, start_unix, minutes)
        f = system.cloud_factor
        poa = irradiance.get_total_irradiance(
            surface_tilt=system.tilt_deg,
            surface_azimuth=system.azimuth_deg,
            solar_zenith=solpos["apparent_zenith"],
            solar_azimuth=solpos["azimuth"],
            dni=cs["dni"] * f,
            ghi=cs["ghi"] * f,
            dhi=cs["dhi"] * f,
            model="isotropic",
        )
        poa_global = np.clip(np.nan_to_num(poa["poa_global"].to_numpy(dtype=np.float64)), 0, None)
        t_cell = temperature.faiman(poa_global, system.temp_air_c, system.wind_m_s)
        pdc0 = system.kwp * 1000.0
        pdc = pvsystem.pvwatts_dc(poa_global, t_cell, pdc0, system.gamma_pdc)
        pdc = np.asarray(pdc, dtype=np.float64) * (1.0 - system.system_losses)
        pac = inverter.pvwatts(pdc, pdc0 * system.inverter_ratio / 0.96)
        pac = np.asarray(pac, dtype=np.float64)
    pac = np.nan_to_num(pac, nan=0.0)
    pac[solpos["apparent_elevation"].to_numpy() <= 0.0] = 0.0  # sun below the horizon
    watts: npt.NDArray[np.int64] = np.clip(np.rint(pac), 0, None).astype(np.int64)
    return watts
