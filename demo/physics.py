"""Motion of the synthetic world: balls and blocks under gravity in a box with a floor and two walls.

Units: the picture is 1 high and `width` (its aspect ratio) wide; y points up and the floor's top is
at `FLOOR`. A body is either flying (ballistic) or on the floor (rolling balls and sliding blocks
decelerate). The simulation advances in fixed 1 ms steps, but floor and wall contacts inside a step
are solved in closed form, so their times are exact, not rounded to the step or the frame grid.
Body-body collisions are found at the end of a step and timed by interpolating the gap, which puts
them within a fraction of the step of the truth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .materials import MATERIALS, Material

GRAVITY = 4.0  # picture heights / s^2: a fall from the top lands in about 0.65 s
FLOOR = 0.12  # the floor band fills the picture's lowest 12 %
SIM_RATE = 1000  # steps per second
SETTLE_SPEED = 0.3  # a rebound slower than this ends the bouncing (its next bounce would come in < 0.15 s)
SILENT_SPEED = 0.08  # contacts slower than this are silent: the body just stops against the surface
ROLLING_DECELERATION = 0.12  # balls roll a long way; blocks slide with their material's friction
BLOCK_BOUNCE = 0.35  # a flat face landing keeps this share of its material's restitution
_EPS = 1e-9


@dataclass
class Body:
    shape: str  # "ball" or "block"
    material: Material
    radius: float  # ball radius or half the block's side
    x: float
    y: float
    vx: float
    vy: float
    enter_time: float = 0.0  # before it, the body waits (still, above the picture when it enters later)
    angle: float = 0.0  # where a ball's marker points, radians
    spin: float = 0.0  # radians / s
    on_floor: bool = False

    @property
    def deceleration(self) -> float:
        return ROLLING_DECELERATION if self.shape == "ball" else self.material.sliding_friction * GRAVITY

    @property
    def mass(self) -> float:
        return self.radius ** 2


@dataclass(frozen=True)
class Contact:
    """One impact: when, where, which bodies, and how fast they met (normal speed, picture heights / s)."""

    time: float
    kind: str  # "floor", "wall" or "collision"
    bodies: tuple[int, ...]
    speed: float


@dataclass
class Motion:
    """Recorded every step: `times [S]`, and per body `x, y, angle, floor_speed [S, n]` (floor_speed is
    the horizontal speed while on the floor, 0 in the air) plus every contact in time order."""

    times: np.ndarray
    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray
    floor_speed: np.ndarray
    contacts: list[Contact]


def _advance(body: Body, tau: float) -> None:
    """Move a body `tau` seconds along its closed-form path."""
    if body.on_floor:
        speed = abs(body.vx)
        if speed > 0:
            a = body.deceleration
            moving = min(tau, speed / a)
            direction = math.copysign(1.0, body.vx)
            body.x += direction * (speed * moving - 0.5 * a * moving * moving)
            body.vx = direction * max(0.0, speed - a * tau)
            if body.shape == "ball":
                body.spin = -body.vx / body.radius
        body.angle += body.spin * tau
        return
    body.x += body.vx * tau
    body.y += body.vy * tau - 0.5 * GRAVITY * tau * tau
    body.vy -= GRAVITY * tau
    body.angle += body.spin * tau


def _floor_time(body: Body) -> float:
    if body.on_floor:
        return math.inf
    height = body.y - FLOOR - body.radius
    if height < -_EPS and body.vy >= 0:
        return math.inf
    root = body.vy * body.vy + 2 * GRAVITY * max(height, 0.0)
    return max(0.0, (body.vy + math.sqrt(root)) / GRAVITY)


def _wall_time(body: Body, width: float) -> float:
    if body.vx == 0:
        return math.inf
    distance = (width - body.radius - body.x) if body.vx > 0 else (body.x - body.radius)
    distance = max(distance, 0.0)
    speed = abs(body.vx)
    if not body.on_floor:
        return distance / speed
    a = body.deceleration
    root = speed * speed - 2 * a * distance
    return math.inf if root < 0 else (speed - math.sqrt(root)) / a


def _hit_floor(index: int, body: Body, time: float, contacts: list[Contact]) -> None:
    speed = -body.vy
    body.y = FLOOR + body.radius
    restitution = body.material.restitution * (1.0 if body.shape == "ball" else BLOCK_BOUNCE)
    rebound = restitution * speed
    if rebound < SETTLE_SPEED:
        body.on_floor, body.vy = True, 0.0
    else:
        body.vy = rebound
    if body.shape == "ball":
        body.vx *= 0.95  # the contact's friction turns a little sliding into rolling
        body.spin = -body.vx / body.radius
    if speed >= SILENT_SPEED:
        contacts.append(Contact(time, "floor", (index,), speed))


def _hit_wall(index: int, body: Body, width: float, time: float, contacts: list[Contact]) -> None:
    speed = abs(body.vx)
    body.x = width - body.radius if body.vx > 0 else body.radius
    if speed < SILENT_SPEED:
        body.vx = 0.0
    else:
        body.vx = -body.material.restitution * body.vx
        contacts.append(Contact(time, "wall", (index,), speed))
    if body.shape == "ball" and body.on_floor:
        body.spin = -body.vx / body.radius


def _gap(a: Body, b: Body) -> float:
    return math.hypot(a.x - b.x, a.y - b.y) - a.radius - b.radius


def _inverse_mass(body: Body, push_y: float) -> tuple[float, float]:
    """(horizontal, vertical) inverse mass; the floor carries a body on it that is pushed down."""
    inverse = 1 / body.mass
    return inverse, (0.0 if body.on_floor and push_y < 0 else inverse)


def _collide(i: int, j: int, a: Body, b: Body, width: float, step_start: float, gap_before: float,
             contacts: list[Contact]) -> None:
    """Resolve an overlap found at the end of a step: an impulse along the line of centres."""
    distance = max(math.hypot(a.x - b.x, a.y - b.y), _EPS)
    nx, ny = (a.x - b.x) / distance, (a.y - b.y) / distance  # from b towards a
    overlap = a.radius + b.radius - distance
    approach = (a.vx - b.vx) * nx + (a.vy - b.vy) * ny
    wax, way = _inverse_mass(a, ny)
    wbx, wby = _inverse_mass(b, -ny)
    stiffness = wax * nx * nx + way * ny * ny + wbx * nx * nx + wby * ny * ny
    if approach < 0:
        restitution = min(a.material.restitution, b.material.restitution)
        impulse = -(1 + restitution) * approach / stiffness
        a.vx += impulse * wax * nx
        a.vy += impulse * way * ny
        b.vx -= impulse * wbx * nx
        b.vy -= impulse * wby * ny
        if -approach >= SILENT_SPEED:
            fraction = gap_before / max(gap_before + overlap, _EPS)
            contacts.append(Contact(step_start + fraction / SIM_RATE, "collision", (i, j), -approach))
    share = overlap / stiffness
    for body, sign, wx, wy in ((a, 1.0, wax, way), (b, -1.0, wbx, wby)):
        body.x = min(max(body.x + sign * share * wx * nx, body.radius), width - body.radius)
        body.y = max(body.y + sign * share * wy * ny, FLOOR + body.radius)
        if body.on_floor:
            if body.vy > SILENT_SPEED:
                body.on_floor = False  # knocked up into the air
            else:
                body.vy, body.y = 0.0, FLOOR + body.radius
        if body.shape == "ball" and body.on_floor:
            body.spin = -body.vx / body.radius


def simulate(bodies: list[Body], duration: float, width: float) -> Motion:
    """Run the world for `duration` seconds; the bodies are changed in place."""
    steps = max(1, math.ceil(duration * SIM_RATE))
    dt = 1.0 / SIM_RATE
    contacts: list[Contact] = []
    record = np.empty((steps + 1, len(bodies), 4))

    def snapshot(row: int) -> None:
        for k, body in enumerate(bodies):
            record[row, k] = (body.x, body.y, body.angle, abs(body.vx) if body.on_floor else 0.0)

    snapshot(0)
    for step in range(steps):
        now, end = step * dt, (step + 1) * dt
        active = [(k, b) for k, b in enumerate(bodies) if b.enter_time <= now]
        gaps = {(i, j): _gap(a, b) for n, (i, a) in enumerate(active) for j, b in active[n + 1:]}
        while True:  # every floor/wall contact inside this step, in time order
            soonest, hit = end - now, None
            for k, body in active:
                for kind, tau in (("floor", _floor_time(body)), ("wall", _wall_time(body, width))):
                    if tau <= soonest:
                        soonest, hit = tau, (k, kind)
            if hit is None:
                break
            for _, body in active:
                _advance(body, soonest)
            now += soonest
            k, kind = hit
            if kind == "floor":
                _hit_floor(k, bodies[k], now, contacts)
            else:
                _hit_wall(k, bodies[k], width, now, contacts)
        for _, body in active:
            _advance(body, end - now)
        for (i, j), gap_before in gaps.items():
            if _gap(bodies[i], bodies[j]) < 0:
                _collide(i, j, bodies[i], bodies[j], width, step * dt, max(gap_before, 0.0), contacts)
        snapshot(step + 1)
    contacts.sort(key=lambda c: c.time)
    return Motion(np.arange(steps + 1) * dt, record[..., 0], record[..., 1], record[..., 2], record[..., 3],
                  contacts)


def sample_bodies(rng: np.random.Generator, width: float, duration: float, count: int,
                  materials: list[str] | None = None) -> list[Body]:
    """A random scene: the first body starts in the picture, the others drop in from above later."""
    names = list(MATERIALS)
    bodies: list[Body] = []
    for index in range(count):
        shape = "ball" if rng.random() < 0.6 else "block"
        material = MATERIALS[materials[index] if materials else names[rng.integers(len(names))]]
        radius = float(rng.uniform(0.06, 0.11))
        direction = 1.0 if rng.random() < 0.5 else -1.0
        speed = rng.uniform(0.15, 1.0) if shape == "ball" else rng.uniform(0.6, 1.6)
        if index == 0:
            enter, y = 0.0, float(rng.uniform(0.5, 0.9))
        else:
            enter, y = float(rng.uniform(0.2, 0.55) * duration), 1.0 + radius + 0.01
        # Spread the starting columns so bodies entering together do not start inside each other.
        lane = (index + rng.uniform(0.2, 0.8)) / count
        x = min(max(lane * width, radius), width - radius)
        vy = float(rng.uniform(-0.3, 0.4) if index == 0 else rng.uniform(-0.4, 0.0))
        bodies.append(Body(shape, material, radius, x, y, float(direction * speed), vy, enter))
    return bodies
