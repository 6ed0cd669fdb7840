// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title FLEML consortium policy
/// @notice The rules every round opens under, set by the operator: how long a round may run, how
///         many submissions a result needs, plain or commit-reveal submissions, how long after
///         its deadline a round may still be finalized before anyone can abandon it, and how many
///         members' audits a result needs before the next round builds on it. The operator also
///         commits the consortium's validation set (the aggregator's root dataset) by hash and
///         CID, under the same delay.
/// @dev A change takes effect only for a round that opens at least `POLICY_DELAY_ROUNDS` rounds
///      after the next one and at least `POLICY_DELAY_SECONDS` after the change was scheduled,
///      so the operator and the aggregator together cannot lower the minimum for the round at
///      hand, nor for the next one, nor burn through rounds quickly to get there. Each round
///      copies what it needs from the policy when it opens (`IFlemlRounds.Round`). A validation
///      set change follows the same rule; `roundValidationHash` tells which set a round opened
///      with.
interface IFlemlPolicy {
    /// @notice A consortium policy. Exactly one of `minSubmissions` and `minSubmissionsBps` is
    ///         non-zero; `revealSeconds` is non-zero exactly in commit-reveal mode;
    ///         `attestationWindowSeconds` is non-zero exactly when `attestationsRequired` is.
    struct Policy {
        uint32 minRoundSeconds; // earliest deadline: the opening time + this (>= 1)
        uint32 maxRoundSeconds; // latest deadline: the opening time + this (<= MAX_POLICY_SECONDS)
        uint32 minSubmissions; // a result needs at least this many submissions (absolute) ...
        uint16 minSubmissionsBps; // ... or this fraction of the active members, rounded up
        uint8 mode; // 0 plain (`submitUpdate`), 1 commit-reveal (`commitUpdate`, `revealUpdate`)
        uint32 revealSeconds; // commit-reveal: length of the reveal window after the deadline
        uint32 graceSeconds; // after the deadline (reveal deadline), before anyone may abandon
        uint16 attestationsRequired; // k: passing (failing) attestations that accept (reject) a
            // result; 0: off, a finalized result is accepted at once; at most the active members
            // when set
        uint32 attestationWindowSeconds; // after finalization: attestations count until then,
            // and a result with fewer than k failing ones is then accepted by default
    }

    /// @notice No policy yet: the operator must call `setInitialPolicy` before the first round.
    error PolicyNotSet();
    /// @notice `setInitialPolicy` is only allowed before the first round opens.
    error RoundsAlreadyStarted(uint256 currentRound);
    /// @notice Exactly one of `minSubmissions` and `minSubmissionsBps` (at most 10,000) must be
    ///         non-zero.
    error InvalidMinimumSubmissions(uint32 minSubmissions, uint16 minSubmissionsBps);
    /// @notice Round durations need 1 <= `minRoundSeconds` <= `maxRoundSeconds` <= `maxSeconds`.
    error InvalidRoundDuration(uint32 minRoundSeconds, uint32 maxRoundSeconds, uint32 maxSeconds);
    /// @notice The mode must be 0 (plain, `revealSeconds` 0) or 1 (commit-reveal, `revealSeconds`
    ///         1 to `maxSeconds`).
    error InvalidSubmissionMode(uint8 mode, uint32 revealSeconds, uint32 maxSeconds);
    /// @notice The grace period must not exceed `maxSeconds`.
    error InvalidGracePeriod(uint32 graceSeconds, uint32 maxSeconds);
    /// @notice `attestationsRequired` must not exceed the active members (`eligibleMembers`),
    ///         and `attestationWindowSeconds` must be 1 to `maxSeconds` when it is non-zero, 0
    ///         when it is zero.
    error InvalidAttestationPolicy(
        uint16 attestationsRequired,
        uint32 attestationWindowSeconds,
        uint32 eligibleMembers,
        uint32 maxSeconds
    );
    /// @notice A validation set is a non-zero hash with a CID (1 to `MAX_CID_LENGTH` bytes), or
    ///         the zero hash with an empty CID (none).
    error InvalidValidationSet(bytes32 validationHash, uint256 cidLength);

    /// @notice A policy was set (the initial one: effective from round 1 at once) or scheduled.
    /// @param effectiveFromRound the first round id that may open under it
    /// @param effectiveFromTime the earliest time (unix seconds) a round may open under it
    /// @param policy the policy
    event PolicyScheduled(
        uint256 indexed effectiveFromRound, uint64 effectiveFromTime, Policy policy
    );

    /// @notice The operator set (before round 1: at once) or scheduled the consortium's
    ///         validation set: the file the aggregator's defense validates updates on.
    /// @param validationHash sha256 of the file's bytes on IPFS (zero: none, for a defense that
    ///        needs no validation data)
    /// @param validationCid its IPFS CID (empty with the zero hash)
    /// @param effectiveFromRound the first round id that may open with it; the round opening
    ///        with it is also no earlier than `POLICY_DELAY_SECONDS` after this event (except
    ///        before round 1)
    event ValidationSetChanged(
        bytes32 indexed validationHash, string validationCid, uint256 effectiveFromRound
    );

    /// @notice Set the policy of the first round, with no delay. Only while no round was opened.
    /// @param newPolicy the policy
    function setInitialPolicy(Policy calldata newPolicy) external;

    /// @notice Schedule a policy change, for rounds that open from round `currentRound() + 1 +
    ///         POLICY_DELAY_ROUNDS` on and no earlier than `POLICY_DELAY_SECONDS` from now. It
    ///         replaces a change that is scheduled but not yet in force (whose delay restarts).
    /// @param newPolicy the policy
    function schedulePolicy(Policy calldata newPolicy) external;

    /// @notice Set the consortium's validation set. Before round 1 it applies at once; later it
    ///         is scheduled like a policy change (from round `currentRound() + 1 +
    ///         POLICY_DELAY_ROUNDS` on, no earlier than `POLICY_DELAY_SECONDS` from now) and
    ///         replaces a scheduled set not yet in force.
    /// @param validationHash sha256 of the file's bytes (zero: none)
    /// @param validationCid its IPFS CID, 1 to `MAX_CID_LENGTH` bytes (empty with the zero hash)
    function setValidationSet(bytes32 validationHash, string calldata validationCid) external;

    /// @notice The validation set the next round to open would open with (zero hash and empty
    ///         CID: none).
    function validationSet()
        external
        view
        returns (bytes32 validationHash, string memory validationCid);

    /// @notice A scheduled validation set not yet in force for the next round (all zeros if none).
    /// @return validationHash the scheduled set's hash (zero: none)
    /// @return validationCid its CID
    /// @return effectiveFromRound the first round id that may open with it (0: nothing scheduled)
    /// @return effectiveFromTime the earliest time (unix seconds) a round may open with it
    function pendingValidationSet()
        external
        view
        returns (
            bytes32 validationHash,
            string memory validationCid,
            uint256 effectiveFromRound,
            uint256 effectiveFromTime
        );

    /// @notice The validation set hash round `roundId` opened with (zero: none, or no such round).
    function roundValidationHash(uint256 roundId) external view returns (bytes32);

    /// @notice The policy the next round to open would open under (all zeros before
    ///         `setInitialPolicy`).
    function policy() external view returns (Policy memory);

    /// @notice A scheduled change not yet in force for the next round (all zeros if none).
    /// @return pending the scheduled policy
    /// @return effectiveFromRound the first round id that may open under it
    /// @return effectiveFromTime the earliest time (unix seconds) a round may open under it
    function pendingPolicy()
        external
        view
        returns (Policy memory pending, uint256 effectiveFromRound, uint256 effectiveFromTime);

    /// @notice Rounds after the next one that a scheduled change waits for.
    function POLICY_DELAY_ROUNDS() external view returns (uint256);

    /// @notice Seconds that a scheduled change waits for, at least.
    function POLICY_DELAY_SECONDS() external view returns (uint256);

    /// @notice The longest round duration, reveal window, grace period and attestation window a
    ///         policy may set.
    function MAX_POLICY_SECONDS() external view returns (uint32);

    /// @notice Longest CID accepted, in bytes.
    function MAX_CID_LENGTH() external view returns (uint256);
}
