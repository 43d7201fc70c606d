"""Spending a byte budget across tensors: greedy marginal gains on convex hulls.

Each tensor offers points (bytes, weighted distortion). Only its lower convex
hull matters: a point above the hull is beaten by a mix of its neighbours at
every Lagrange multiplier. Starting from every tensor's cheapest hull point,
the allocator repeatedly takes the upgrade with the largest distortion drop
per byte that still fits. On hulls the slopes of each tensor's successive
upgrades fall, so this visits exactly the Lagrangian solutions for decreasing
multipliers, and then fills what is left with the best upgrades that fit
(the "greedy marginal" finish of a knapsack relaxation).
"""

from __future__ import annotations

import heapq
import math

from .measure import TensorCurve


def lower_hull(rates: list[float], distortions: list[float]) -> list[int]:
    """Indices of the lower-left convex hull, rate ascending, distortion strictly falling."""
    order = sorted(range(len(rates)), key=lambda i: (rates[i], distortions[i]))
    # keep only points that lower the distortion (Pareto front) ...
    front: list[int] = []
    for i in order:
        if not front or distortions[i] < distortions[front[-1]]:
            front.append(i)
    # ... then drop those above the segment between their neighbours
    hull: list[int] = []
    for i in front:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b lies on or above the segment a-i: the slope a->b is not steeper than a->i
            cross = (rates[b] - rates[a]) * (distortions[i] - distortions[a]) - (distortions[b] - distortions[a]) * (rates[i] - rates[a])
            if cross <= 0:
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def build_hulls(curves: list[TensorCurve]) -> None:
    for curve in curves:
        rates = [p.stored_bytes for p in curve.points]
        distortions = [curve.weight * p.relative_mse for p in curve.points]
        curve.hull = lower_hull(rates, distortions)


def allocate(curves: list[TensorCurve], budget: float) -> list[int]:
    """Per curve, the index (into ``curve.points``) of its chosen point; total bytes <= budget
    when the cheapest points fit (the caller checks that first)."""
    position = [0] * len(curves)  # index into each hull
    spent = sum(c.points[c.hull[0]].stored_bytes for c in curves)
    heap: list[tuple[float, int]] = []

    def push(k: int) -> None:
        curve = curves[k]
        if position[k] + 1 < len(curve.hull):
            here, there = curve.points[curve.hull[position[k]]], curve.points[curve.hull[position[k] + 1]]
            extra = there.stored_bytes - here.stored_bytes
            gain = curve.weight * (here.relative_mse - there.relative_mse)
            slope = gain / extra if extra > 0 else math.inf
            heapq.heappush(heap, (-slope, k))

    for k in range(len(curves)):
        push(k)
    while heap:
        _, k = heapq.heappop(heap)
        curve = curves[k]
        extra = curve.points[curve.hull[position[k] + 1]].stored_bytes - curve.points[curve.hull[position[k]]].stored_bytes
        if spent + extra > budget:
            continue  # this tensor's later upgrades are dearer per byte: leave it here
        spent += extra
        position[k] += 1
        push(k)
    return [curve.hull[p] for curve, p in zip(curves, position, strict=True)]


def cheapest_downgrade(curves: list[TensorCurve], chosen: list[int]) -> tuple[int, int] | None:
    """(curve, point) of the step down one hull point that costs the least distortion per byte saved."""
    best, best_cost = None, math.inf
    for k, curve in enumerate(curves):
        if curve.pinned or chosen[k] not in curve.hull:
            continue
        at = curve.hull.index(chosen[k])
        if at == 0:
            continue
        here, below = curve.points[chosen[k]], curve.points[curve.hull[at - 1]]
        saved = here.stored_bytes - below.stored_bytes
        if saved <= 0:
            continue
        cost = curve.weight * (below.relative_mse - here.relative_mse) / saved
        if cost < best_cost:
            best, best_cost = (k, curve.hull[at - 1]), cost
    return best
