// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IFlemlPolicy} from "../interfaces/IFlemlPolicy.sol";
import {Membership} from "./Membership.sol";

/// @title The operator's round policy and validation set, with delayed changes
/// @notice Holds the policy in force and at most one scheduled change, and the same for the
///         consortium's validation set. The operator sets the first policy and validation set
///         freely before round 1 (`setInitialPolicy`, `setValidationSet`); every later change
///         waits `POLICY_DELAY_ROUNDS` rounds after the next one and `POLICY_DELAY_SECONDS`
///         seconds.
/// @dev Abstract: `FlemlConsortium` inherits it and takes the policy when a round opens
///      (`_takePolicy`), which is also when a due change replaces the policy in storage and a
///      due validation set starts. Validation sets are kept as a history (the last entry may be
///      scheduled, not yet in force) with the round each started at, so a round's set is a view
///      (`roundValidationHash`) and opening a round writes nothing for it: the two scheduling
///      words share the slot of the policy's, which the opening reads anyway.
abstract contract ConsortiumPolicy is Membership, IFlemlPolicy {
    /// @notice Rounds after the next one that a scheduled change waits for: with round c the
    ///         latest, a change scheduled now applies from round c + 3 on.
    uint256 public constant POLICY_DELAY_ROUNDS = 2;
    /// @notice Seconds a scheduled change waits for, at least: a day, so that members can see it
    ///         and react, and so that opening and abandoning rounds quickly cannot skip the
    ///         round delay.
    uint256 public constant POLICY_DELAY_SECONDS = 1 days;
    /// @notice The longest round duration, reveal window, grace period and attestation window a
    ///         policy may set.
    uint32 public constant MAX_POLICY_SECONDS = 30 days;
    /// @notice Longest CID accepted, in bytes: a CIDv1 of a sha2-256 or sha3-512 digest in
    ///         base32 takes 59 to 113 characters.
    uint256 public constant MAX_CID_LENGTH = 128;

    uint8 internal constant MODE_PLAIN = 0;
    uint8 internal constant MODE_COMMIT_REVEAL = 1;
    uint16 private constant BPS = 10_000;

    /// @dev A validation set and the first round that opened (or may open) with it.
    struct ValidationSet {
        bytes32 hash;
        uint64 fromRound;
        string cid;
    }

    Policy private _policy;
    Policy private _pending;
    uint64 private _pendingFromRound;
    uint64 private _pendingFromTime;
    // non-zero while the last entry of `_validationSets` is scheduled, not yet in force
    uint64 private _validationPendingFromRound;
    uint64 private _validationPendingFromTime;
    ValidationSet[] private _validationSets;

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
    function setValidationSet(bytes32 validationHash, string calldata validationCid)
        external
        onlyOperator
    {
        uint256 cidLength = bytes(validationCid).length;
        if (validationHash == bytes32(0)
            ? cidLength != 0
            : cidLength == 0 || cidLength > MAX_CID_LENGTH) {
            revert InvalidValidationSet(validationHash, cidLength);
        }
        uint256 next = _latestRoundId() + 1;
        uint256 fromRound = 1;
        if (next == 1) {
            // before round 1: in force at once, replacing any earlier choice
            if (_validationSets.length == 0) _validationSets.push();
        } else {
            _applyDueValidation(next); // a set already in force for the next round stays so
            fromRound = next + POLICY_DELAY_ROUNDS;
            // replace a scheduled set not yet in force, else schedule a new entry
            if (_validationPendingFromRound == 0) _validationSets.push();
            _validationPendingFromRound = uint64(fromRound);
            _validationPendingFromTime = uint64(block.timestamp + POLICY_DELAY_SECONDS);
        }
        ValidationSet storage entry = _validationSets[_validationSets.length - 1];
        entry.hash = validationHash;
        entry.fromRound = uint64(fromRound);
        entry.cid = validationCid;
        emit ValidationSetChanged(validationHash, validationCid, fromRound);
    }

    /// @inheritdoc IFlemlPolicy
    function validationSet()
        external
        view
        returns (bytes32 validationHash, string memory validationCid)
    {
        uint256 inForce = _validationInForce(_latestRoundId() + 1);
        if (inForce == 0) return (bytes32(0), "");
        ValidationSet storage entry = _validationSets[inForce - 1];
        return (entry.hash, entry.cid);
    }

    /// @inheritdoc IFlemlPolicy
    function pendingValidationSet()
        external
        view
        returns (
            bytes32 validationHash,
            string memory validationCid,
            uint256 effectiveFromRound,
            uint256 effectiveFromTime
        )
    {
        uint256 entries = _validationSets.length;
        if (_validationInForce(_latestRoundId() + 1) == entries) return (bytes32(0), "", 0, 0);
        ValidationSet storage entry = _validationSets[entries - 1];
        return (entry.hash, entry.cid, _validationPendingFromRound, _validationPendingFromTime);
    }

    /// @inheritdoc IFlemlPolicy
    function roundValidationHash(uint256 roundId) external view returns (bytes32) {
        if (roundId == 0 || roundId > _latestRoundId()) return bytes32(0);
        // binary search the started sets (their `fromRound` increase) for the last one that
        // started at or before `roundId`
        uint256 low = 0;
        uint256 high = _validationSets.length;
        if (_validationPendingFromRound != 0) high -= 1;
        while (low < high) {
            uint256 mid = (low + high) / 2;
            if (_validationSets[mid].fromRound <= roundId) low = mid + 1;
            else high = mid;
        }
        return low == 0 ? bytes32(0) : _validationSets[low - 1].hash;
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

    /// @dev The policy round `roundId` (the next to open) opens under; applies a due change and
    ///      starts a due validation set.
    function _takePolicy(uint256 roundId) internal returns (Policy memory taken) {
        _applyDuePolicy(roundId);
        _applyDueValidation(roundId);
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

    /// @dev Start the scheduled validation set if it is due for `nextRound`: from that round on.
    function _applyDueValidation(uint256 nextRound) private {
        if (!_isValidationDue(nextRound)) return;
        ValidationSet storage entry = _validationSets[_validationSets.length - 1];
        if (entry.fromRound != nextRound) entry.fromRound = uint64(nextRound);
        delete _validationPendingFromRound;
        delete _validationPendingFromTime;
    }

    /// @dev How many entries of `_validationSets` are in force for `nextRound` (0: none); the
    ///      last of them is the set it opens with (if not the zero hash).
    function _validationInForce(uint256 nextRound) private view returns (uint256) {
        uint256 entries = _validationSets.length;
        if (_validationPendingFromRound != 0 && !_isValidationDue(nextRound)) return entries - 1;
        return entries;
    }

    function _isValidationDue(uint256 nextRound) private view returns (bool) {
        uint64 fromRound = _validationPendingFromRound;
        return fromRound != 0 && nextRound >= fromRound
            && block.timestamp >= _validationPendingFromTime;
    }

    function _isDue(uint256 nextRound) private view returns (bool) {
        uint64 fromRound = _pendingFromRound;
        return fromRound != 0 && nextRound >= fromRound && block.timestamp >= _pendingFromTime;
    }

    function _validate(Policy calldata p) private view {
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
        // the aggregator is never an active member: every active member may attest
        uint32 eligible = activeMembers();
        bool windowValid = p.attestationsRequired == 0
            ? p.attestationWindowSeconds == 0
            : p.attestationWindowSeconds != 0 && p.attestationWindowSeconds <= MAX_POLICY_SECONDS;
        if (p.attestationsRequired > eligible || !windowValid) {
            revert InvalidAttestationPolicy(
                p.attestationsRequired, p.attestationWindowSeconds, eligible, MAX_POLICY_SECONDS
            );
        }
    }
}
