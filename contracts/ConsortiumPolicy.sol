// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IFlemlPolicy} from "../interfaces/IFlemlPolicy.sol";
import {Membership} from "./Membership.sol";

/// @title The operator's round policy, with delayed changes
/// @notice Holds the policy in force and at most one scheduled change. The operator sets the
///         first policy freely before round 1 (`setInitialPolicy`); every later change waits
///         `POLICY_DELAY_ROUNDS` rounds after the next one and `POLICY_DELAY_SECONDS` seconds.
/// @dev Abstract: `FlemlConsortium` inherits it and takes the policy when a round opens
///      (`_takePolicy`), which is also when a due change replaces the policy in storage.
abstract contract ConsortiumPolicy is Membership, IFlemlPolicy {
    /// @notice Rounds after the next one that a scheduled change waits for: with round c the
    ///         latest, a change scheduled now applies from round c + 3 on.
    uint256 public constant POLICY_DELAY_ROUNDS = 2;
    /// @notice Seconds a scheduled change waits for, at least: a day, so that members can see it
    ///         and react, and so that opening and abandoning rounds quickly cannot skip the
    ///         round delay.
    uint256 public constant POLICY_DELAY_SECONDS = 1 days;
    /// @notice The longest round duration, reveal window and grace period a policy may set.
    uint32 public constant MAX_POLICY_SECONDS = 30 days;

    uint8 internal constant MODE_PLAIN = 0;
    uint8 internal constant MODE_COMMIT_REVEAL = 1;
    uint16 private constant BPS = 10_000;

    Policy private _policy;
    Policy private _pending;
    uint64 private _pendingFromRound;
    uint64 private _pendingFromTime;

    /// @inheritdoc IFlemlPolicy
    function setInitialPolicy(Policy calldata newPolicy) external onlyOperator {
        uint256 latest = _latestRoundId();
        if (latest != 0) revert RoundsAlreadyStarted(latest);
        _validate(newPolicy);
        _policy = newPolicy;
        delete _pending;
        delete _pendingFromRound;
        delete _pendingFromTime;
        emit PolicyScheduled(1, uint64(block.timestamp), newPolicy);
    }

    /// @inheritdoc IFlemlPolicy
    function schedulePolicy(Policy calldata newPolicy) external onlyOperator {
        if (_policy.maxRoundSeconds == 0) revert PolicyNotSet();
        _validate(newPolicy);
        uint256 next = _latestRoundId() + 1;
        _applyDuePolicy(next); // a change already in force for the next round stays in force
        uint64 fromRound = uint64(next + POLICY_DELAY_ROUNDS);
        uint64 fromTime = uint64(block.timestamp + POLICY_DELAY_SECONDS);
        _pending = newPolicy;
        _pendingFromRound = fromRound;
        _pendingFromTime = fromTime;
        emit PolicyScheduled(fromRound, fromTime, newPolicy);
    }

    /// @inheritdoc IFlemlPolicy
    function policy() external view returns (Policy memory) {
        return _isDue(_latestRoundId() + 1) ? _pending : _policy;
    }

    /// @inheritdoc IFlemlPolicy
    function pendingPolicy()
        external
        view
        returns (Policy memory pending, uint256 effectiveFromRound, uint256 effectiveFromTime)
    {
        if (_pendingFromRound == 0 || _isDue(_latestRoundId() + 1)) {
            return (pending, 0, 0);
        }
        return (_pending, _pendingFromRound, _pendingFromTime);
    }

    /// @dev The policy round `roundId` (the next to open) opens under; applies a due change.
    function _takePolicy(uint256 roundId) internal returns (Policy memory taken) {
        _applyDuePolicy(roundId);
        taken = _policy;
        if (taken.maxRoundSeconds == 0) revert PolicyNotSet();
    }

    /// @dev The minimum submissions of a round opened under `taken` with `active` members.
    function _minimumSubmissions(Policy memory taken, uint32 active)
        internal
        pure
        returns (uint32)
    {
        if (taken.minSubmissions != 0) return taken.minSubmissions;
        // ceil(active * bps / 10,000); active < 2^32 and bps <= 10,000: no overflow
        return uint32((uint256(active) * taken.minSubmissionsBps + BPS - 1) / BPS);
    }

    /// @dev The latest round id (0 before the first), from the rounds contract.
    function _latestRoundId() internal view virtual returns (uint256);

    function _applyDuePolicy(uint256 nextRound) private {
        if (!_isDue(nextRound)) return;
        _policy = _pending;
        delete _pending;
        delete _pendingFromRound;
        delete _pendingFromTime;
    }

    function _isDue(uint256 nextRound) private view returns (bool) {
        uint64 fromRound = _pendingFromRound;
        return fromRound != 0 && nextRound >= fromRound && block.timestamp >= _pendingFromTime;
    }

    function _validate(Policy calldata p) private pure {
        if ((p.minSubmissions == 0) == (p.minSubmissionsBps == 0) || p.minSubmissionsBps > BPS) {
            revert InvalidMinimumSubmissions(p.minSubmissions, p.minSubmissionsBps);
        }
        if (p.minRoundSeconds == 0 || p.minRoundSeconds > p.maxRoundSeconds
            || p.maxRoundSeconds > MAX_POLICY_SECONDS) {
            revert InvalidRoundDuration(p.minRoundSeconds, p.maxRoundSeconds, MAX_POLICY_SECONDS);
        }
        bool plain = p.mode == MODE_PLAIN && p.revealSeconds == 0;
        bool commitReveal = p.mode == MODE_COMMIT_REVEAL && p.revealSeconds != 0
            && p.revealSeconds <= MAX_POLICY_SECONDS;
        if (!plain && !commitReveal) {
            revert InvalidSubmissionMode(p.mode, p.revealSeconds, MAX_POLICY_SECONDS);
        }
        if (p.graceSeconds > MAX_POLICY_SECONDS) {
            revert InvalidGracePeriod(p.graceSeconds, MAX_POLICY_SECONDS);
        }
    }
}
