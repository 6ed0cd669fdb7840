// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IFlemlAttestations} from "../interfaces/IFlemlAttestations.sol";
import {IFlemlRounds} from "../interfaces/IFlemlRounds.sol";
import {ConsortiumPolicy} from "./ConsortiumPolicy.sol";

/// @title FLEML consortium: membership, policy, training rounds and update commitments
/// @notice One round at a time: the aggregator opens it on the last accepted global model, each
///         active member submits one update (content hash + IPFS CID) before the deadline, or in
///         commit-reveal mode commits to it before the deadline and reveals it after; the
///         aggregator closes the round and finalizes it with the new global model, the round
///         report and the flagged members, provided the round has the policy's minimum number of
///         submissions. A round that is not finalized in time can be abandoned by anyone, so no
///         lost key can stall the consortium. Members attest finalized rounds after auditing
///         them; with the policy's `attestationsRequired` k > 0 the next round opens only once
///         the result is accepted (k passes, or the window ends with fewer than k fails), and a
///         result k members failed can be rejected. Finalized results never change.
/// @dev Gas. A plain submission touches three storage slots, each read and written once: the
///      round's packed counters, the member's record (membership and the last rounds it submitted
///      and committed to) and the member's latest commitment. The commitment slot is reused round
///      after round, so from a member's second round on it is a non-zero to non-zero write (5,000
///      gas, not 22,100). A commit-reveal member writes a second reused slot (its latest
///      commitment) and the round's second slot (the commit count). The full history of
///      commitments is in events. CIDs and the flagged bitmap live in events; finalization
///      writes only the non-zero bitmap words (one word per 256 member slots) and reads two slots
///      per flagged member to check it submitted in the round (its record's `lastRound`).
///      Attestations: k sits in the slot of the round's status, so with k = 0 opening and
///      finalizing read nothing more; the pass/fail counters and the attestation deadline share
///      the round's second slot (non-zero once a round with k > 0 is finalized), so an
///      attestation writes that slot and one bit of the round's "who attested" bitmap (a fresh
///      word for the first attester of each 256 member indices).
contract FlemlConsortium is ConsortiumPolicy, IFlemlRounds, IFlemlAttestations {
    uint256 private constant PROTOCOL_VERSION = 2;

    uint64 private _currentRound;
    uint64 private _lastFinalized;
    // the latest accepted round before the current one (set when the next round opens)
    uint64 private _lastAccepted;
    mapping(uint256 roundId => Round) private _rounds;
    mapping(address member => bytes32) private _latestCommitment;
    mapping(address member => bytes32) private _latestCommit;
    mapping(uint256 roundId => mapping(uint256 word => uint256)) private _flagged;
    mapping(uint256 roundId => mapping(uint256 word => uint256)) private _attested;

    modifier onlyAggregator() {
        _checkAggregator();
        _;
    }

    /// @inheritdoc IFlemlRounds
    function openRound(bytes32 modelHash, string calldata modelCid, uint64 deadline, uint32 quorum)
        external
        onlyAggregator
        returns (uint256 roundId)
    {
        uint256 previous = _currentRound;
        uint256 accepted = _lastAccepted;
        if (previous != 0) {
            Round storage last = _rounds[previous];
            RoundStatus status = last.status;
            if (status == RoundStatus.Finalized) {
                if (!_isAccepted(last)) {
                    revert PreviousRoundNotAccepted(
                        previous, last.passes, last.fails, last.attestationsRequired,
                        last.attestationDeadline
                    );
                }
                accepted = previous;
                _lastAccepted = uint64(previous);
            } else if (status != RoundStatus.Abandoned && status != RoundStatus.Rejected) {
                revert PreviousRoundNotFinalized(previous);
            }
        }
        if (modelHash == bytes32(0)) revert EmptyHash();
        // rounds form a chain: each trains on the model the last accepted round produced
        bytes32 base = _baseModel(previous, accepted);
        if (base != bytes32(0) && modelHash != base) revert ModelNotPreviousResult(modelHash, base);
        _checkCid(modelCid);

        roundId = previous + 1;
        _currentRound = uint64(roundId);
        Round storage round = _initRound(roundId, modelHash, deadline, quorum);
        emit RoundOpened(
            roundId, modelHash, msg.sender, modelCid, deadline, quorum, round.minSubmissions,
            round.mode, round.revealDeadline
        );
    }

    /// @inheritdoc IFlemlRounds
    function submitUpdate(uint256 roundId, bytes32 updateHash, string calldata updateCid)
        external
    {
        MemberRecord storage member = _activeMember();
        Round storage round = _requireStatus(roundId, RoundStatus.Open);
        if (round.mode != MODE_PLAIN) revert WrongSubmissionMode(roundId, round.mode);
        if (block.timestamp > round.deadline) revert DeadlinePassed(roundId, round.deadline);
        _record(member, round, roundId, updateHash, updateCid);
    }

    /// @inheritdoc IFlemlRounds
    function commitUpdate(uint256 roundId, bytes32 commitment) external {
        MemberRecord storage member = _activeMember();
        Round storage round = _requireStatus(roundId, RoundStatus.Open);
        if (round.mode != MODE_COMMIT_REVEAL) revert WrongSubmissionMode(roundId, round.mode);
        if (block.timestamp > round.deadline) revert DeadlinePassed(roundId, round.deadline);
        if (commitment == bytes32(0)) revert EmptyHash();
        if (member.lastCommitRound == roundId) revert AlreadyCommitted(roundId, msg.sender);

        member.lastCommitRound = uint64(roundId);
        _latestCommit[msg.sender] = commitment;
        round.commits += 1;
        emit UpdateCommitted(roundId, msg.sender, commitment);
    }

    /// @inheritdoc IFlemlRounds
    function revealUpdate(
        uint256 roundId,
        bytes32 updateHash,
        string calldata updateCid,
        bytes32 salt
    ) external {
        MemberRecord storage member = _activeMember();
        Round storage round = _requireStatus(roundId, RoundStatus.Open);
        if (round.mode != MODE_COMMIT_REVEAL) revert WrongSubmissionMode(roundId, round.mode);
        if (block.timestamp <= round.deadline) revert RevealNotOpen(roundId, round.deadline);
        if (block.timestamp > round.revealDeadline) {
            revert RevealWindowClosed(roundId, round.revealDeadline);
        }
        if (member.lastCommitRound != roundId) revert NoCommitment(roundId, msg.sender);
        if (_commitment(msg.sender, roundId, updateHash, salt) != _latestCommit[msg.sender]) {
            revert CommitmentMismatch(roundId, msg.sender);
        }
        _record(member, round, roundId, updateHash, updateCid);
    }

    /// @inheritdoc IFlemlRounds
    function closeRound(uint256 roundId) external onlyAggregator {
        Round storage round = _requireStatus(roundId, RoundStatus.Open);
        uint32 submissions = round.submissions;
        bool quorumReached = submissions >= round.quorum;
        if (round.mode == MODE_PLAIN) {
            if (!quorumReached && block.timestamp <= round.deadline) {
                revert QuorumNotReached(roundId, submissions, round.quorum);
            }
        } else if (block.timestamp <= round.revealDeadline) {
            // early only once nobody who committed can still reveal and be counted
            if (block.timestamp <= round.deadline) revert CommitPhaseOpen(roundId, round.deadline);
            if (!quorumReached) revert QuorumNotReached(roundId, submissions, round.quorum);
            if (submissions < round.commits) {
                revert RevealsPending(roundId, round.commits, submissions);
            }
        }
        round.status = RoundStatus.Closed;
        emit RoundClosed(roundId, msg.sender, submissions, quorumReached);
    }

    /// @inheritdoc IFlemlRounds
    function finalizeRound(
        uint256 roundId,
        bytes32 resultHash,
        string calldata resultCid,
        bytes32 reportHash,
        string calldata reportCid,
        uint256[] calldata flaggedBitmap
    ) external onlyAggregator {
        Round storage round = _requireStatus(roundId, RoundStatus.Closed);
        if (round.submissions < round.minSubmissions) {
            revert BelowMinimumSubmissions(roundId, round.submissions, round.minSubmissions);
        }
        if (resultHash == bytes32(0) || reportHash == bytes32(0)) revert EmptyHash();
        _checkCid(resultCid);
        _checkCid(reportCid);
        uint256 slots = memberSlots();
        uint256 maxWords = (slots + 255) / 256;
        if (flaggedBitmap.length > maxWords) revert BitmapTooLong(flaggedBitmap.length, maxWords);
        // no bit may name a member index that does not exist (yet)
        if (flaggedBitmap.length == maxWords && maxWords != 0 && slots % 256 != 0
            && flaggedBitmap[maxWords - 1] >> (slots % 256) != 0) {
            revert UnknownMemberFlagged(flaggedBitmap[maxWords - 1], slots);
        }

        mapping(uint256 => uint256) storage flagged = _flagged[roundId];
        for (uint256 word = 0; word < flaggedBitmap.length; ++word) {
            uint256 bits = flaggedBitmap[word];
            if (bits != 0) {
                _checkFlaggedSubmitted(roundId, word, bits);
                flagged[word] = bits;
            }
        }
        round.resultHash = resultHash;
        round.reportHash = reportHash;
        round.status = RoundStatus.Finalized;
        if (round.attestationsRequired != 0) {
            round.attestationDeadline = uint64(block.timestamp + round.attestationWindow);
        }
        _lastFinalized = uint64(roundId);
        emit RoundFinalized(
            roundId, resultHash, msg.sender, resultCid, reportHash, reportCid, flaggedBitmap
        );
    }

    /// @inheritdoc IFlemlAttestations
    function attestRound(uint256 roundId, bool pass, bytes32 auditHash, string calldata auditCid)
        external
    {
        Round storage round = _recordAttestation(roundId, auditHash, auditCid);
        if (pass) round.passes += 1;
        else round.fails += 1;
        emit RoundAttested(roundId, msg.sender, pass, auditHash, auditCid);
    }

    /// @inheritdoc IFlemlAttestations
    function attestInconclusive(uint256 roundId, bytes32 auditHash, string calldata auditCid)
        external
    {
        _recordAttestation(roundId, auditHash, auditCid);
        emit RoundAuditInconclusive(roundId, msg.sender, auditHash, auditCid);
    }

    /// @inheritdoc IFlemlAttestations
    function rejectRound(uint256 roundId) external {
        Round storage round = _requireStatus(roundId, RoundStatus.Finalized);
        uint256 latest = _currentRound;
        if (roundId != latest) revert LaterRoundOpened(roundId, latest);
        uint16 required = round.attestationsRequired;
        uint32 passes = round.passes;
        uint32 fails = round.fails;
        if (required == 0 || fails < required) {
            revert TooFewFailingAttestations(roundId, fails, required);
        }
        if (msg.sender != operator()
            && (block.timestamp <= round.attestationDeadline || passes >= required)) {
            revert RejectionReservedToOperator(roundId, round.attestationDeadline);
        }
        round.status = RoundStatus.Rejected;
        emit RoundRejected(roundId, msg.sender, passes, fails);
    }

    /// @inheritdoc IFlemlRounds
    function abandonRound(uint256 roundId) external {
        Round storage round = _rounds[roundId];
        RoundStatus status = round.status;
        if (status != RoundStatus.Open && status != RoundStatus.Closed) {
            if (status == RoundStatus.None) revert UnknownRound(roundId);
            revert RoundNotAbandonable(roundId, status);
        }
        if (msg.sender != operator()) {
            uint256 abandonable = _abandonableAfter(round);
            if (block.timestamp <= abandonable && _canReachMinimum(round, status)) {
                revert GracePeriodNotOver(roundId, abandonable);
            }
        }
        round.status = RoundStatus.Abandoned;
        emit RoundAbandoned(roundId, msg.sender);
    }

    /// @inheritdoc IFlemlRounds
    function version() external pure returns (uint256) {
        return PROTOCOL_VERSION;
    }

    /// @inheritdoc IFlemlRounds
    function currentRound() external view returns (uint256) {
        return _currentRound;
    }

    /// @inheritdoc IFlemlRounds
    function lastFinalizedRound() external view returns (uint256) {
        return _lastFinalized;
    }

    /// @inheritdoc IFlemlRounds
    function baseModelHash() external view returns (bytes32) {
        return _baseModel(_currentRound, _lastAcceptedRound());
    }

    /// @inheritdoc IFlemlRounds
    function getRound(uint256 roundId) external view returns (Round memory) {
        return _rounds[roundId];
    }

    /// @inheritdoc IFlemlRounds
    function abandonableAfter(uint256 roundId) external view returns (uint256) {
        Round storage round = _rounds[roundId];
        return round.status == RoundStatus.None ? 0 : _abandonableAfter(round);
    }

    /// @inheritdoc IFlemlRounds
    function latestCommitment(address member)
        external
        view
        returns (uint256 roundId, bytes32 updateHash)
    {
        return (_memberRecord(member).lastRound, _latestCommitment[member]);
    }

    /// @inheritdoc IFlemlRounds
    function latestCommit(address member) external view returns (uint256 roundId, bytes32 commitment) {
        return (_memberRecord(member).lastCommitRound, _latestCommit[member]);
    }

    /// @inheritdoc IFlemlRounds
    function commitmentOf(address member, uint256 roundId, bytes32 updateHash, bytes32 salt)
        external
        pure
        returns (bytes32)
    {
        return _commitment(member, roundId, updateHash, salt);
    }

    /// @inheritdoc IFlemlRounds
    function verifyCommitment(uint256 roundId, address member, bytes32 updateHash)
        external
        view
        returns (CommitmentStatus)
    {
        uint64 lastRound = _memberRecord(member).lastRound;
        if (roundId == 0 || roundId > lastRound) return CommitmentStatus.NotSubmitted;
        if (roundId < lastRound) return CommitmentStatus.Superseded;
        return _latestCommitment[member] == updateHash
            ? CommitmentStatus.Matches
            : CommitmentStatus.Differs;
    }

    /// @inheritdoc IFlemlAttestations
    function attestations(uint256 roundId) external view returns (uint32 passes, uint32 fails) {
        Round storage round = _rounds[roundId];
        return (round.passes, round.fails);
    }

    /// @inheritdoc IFlemlAttestations
    function hasAttested(uint256 roundId, address member) external view returns (bool) {
        MemberRecord storage record = _memberRecord(member);
        if (!record.known) return false;
        uint32 index = record.index;
        return (_attested[roundId][index / 256] >> (index % 256)) & 1 == 1;
    }

    /// @inheritdoc IFlemlAttestations
    function isAccepted(uint256 roundId) external view returns (bool) {
        Round storage round = _rounds[roundId];
        return round.status == RoundStatus.Finalized && _isAccepted(round);
    }

    /// @inheritdoc IFlemlAttestations
    function lastAcceptedRound() external view returns (uint256) {
        return _lastAcceptedRound();
    }

    /// @inheritdoc IFlemlRounds
    function isFlagged(uint256 roundId, address member) external view returns (bool) {
        MemberRecord storage record = _memberRecord(member);
        if (!record.known || !_hasResult(_rounds[roundId].status)) return false;
        uint32 index = record.index;
        return (_flagged[roundId][index / 256] >> (index % 256)) & 1 == 1;
    }

    /// @inheritdoc IFlemlRounds
    function verifyResult(uint256 roundId, bytes32 resultHash, bytes32 reportHash)
        external
        view
        returns (bool)
    {
        Round storage round = _rounds[roundId];
        return _hasResult(round.status) && round.resultHash == resultHash
            && round.reportHash == reportHash;
    }

    function _latestRoundId() internal view override returns (uint256) {
        return _currentRound;
    }

    /// @dev Check the new round's deadline and quorum against the policy it opens under, and
    ///      write its record.
    function _initRound(uint256 roundId, bytes32 modelHash, uint64 deadline, uint32 quorum)
        private
        returns (Round storage round)
    {
        Policy memory taken = _takePolicy(roundId);
        uint256 earliest = block.timestamp + taken.minRoundSeconds;
        uint256 latest = block.timestamp + taken.maxRoundSeconds;
        if (deadline < earliest || deadline > latest) {
            revert DeadlineOutOfRange(deadline, earliest, latest);
        }
        uint32 active = activeMembers();
        uint32 minimum = _minimumSubmissions(taken, active);
        if (quorum == 0 || quorum < minimum || quorum > active) {
            revert InvalidQuorum(quorum, minimum, active);
        }
        round = _rounds[roundId];
        round.modelHash = modelHash;
        round.deadline = deadline;
        round.quorum = quorum;
        round.status = RoundStatus.Open;
        round.openedBlock = uint64(block.number);
        round.minSubmissions = minimum;
        round.mode = taken.mode;
        if (taken.mode == MODE_COMMIT_REVEAL) round.revealDeadline = deadline + taken.revealSeconds;
        round.graceSeconds = taken.graceSeconds;
        if (taken.attestationsRequired != 0) {
            round.attestationsRequired = taken.attestationsRequired;
            round.attestationWindow = taken.attestationWindowSeconds;
        }
    }

    /// @dev Count a submission (plain) or a reveal (commit-reveal) of `msg.sender`.
    function _record(
        MemberRecord storage member,
        Round storage round,
        uint256 roundId,
        bytes32 updateHash,
        string calldata updateCid
    ) private {
        if (updateHash == bytes32(0)) revert EmptyHash();
        _checkCid(updateCid);
        if (member.lastRound == roundId) revert AlreadySubmitted(roundId, msg.sender);
        member.lastRound = uint64(roundId);
        _latestCommitment[msg.sender] = updateHash;
        round.submissions += 1;
        emit UpdateSubmitted(roundId, msg.sender, updateHash, updateCid);
    }

    /// @dev Every set bit of bitmap word `word` must name a member whose latest submission is
    ///      to this round: a round is finalized before any later round opens, so `lastRound`
    ///      equals `roundId` exactly for the round's submitters. Two cold reads per set bit.
    function _checkFlaggedSubmitted(uint256 roundId, uint256 word, uint256 bits) private view {
        for (; bits != 0; bits &= bits - 1) {
            uint256 index = word * 256 + _lowestSetBit(bits);
            if (_memberRecord(_memberAtIndex(index)).lastRound != roundId) {
                revert FlaggedNonSubmitter(roundId, index);
            }
        }
    }

    function _activeMember() private view returns (MemberRecord storage member) {
        member = _memberRecord(msg.sender);
        if (!member.active) revert NotMember(msg.sender);
    }

    function _requireStatus(uint256 roundId, RoundStatus required)
        private
        view
        returns (Round storage round)
    {
        round = _rounds[roundId];
        if (round.status != required) {
            if (round.status == RoundStatus.None) revert UnknownRound(roundId);
            revert WrongRoundStatus(roundId, round.status, required);
        }
    }

    /// @dev The model the round after `latest` must train on when `accepted` is the last
    ///      accepted round (zero: any, for round 1).
    function _baseModel(uint256 latest, uint256 accepted) private view returns (bytes32) {
        if (accepted != 0) return _rounds[accepted].resultHash;
        // nothing accepted yet: every round retries round 1's model
        return latest == 0 ? bytes32(0) : _rounds[1].modelHash;
    }

    /// @dev The latest accepted round: the current one if it is finalized and accepted, else
    ///      the one recorded when the current round opened.
    function _lastAcceptedRound() private view returns (uint256) {
        uint256 latest = _currentRound;
        Round storage round = _rounds[latest];
        if (round.status == RoundStatus.Finalized && _isAccepted(round)) {
            return latest;
        }
        return _lastAccepted;
    }

    /// @dev Whether a finalized round is accepted: no attestations required, k passing ones, or
    ///      its window over with fewer than k failing ones.
    function _isAccepted(Round storage round) private view returns (bool) {
        uint16 required = round.attestationsRequired;
        if (required == 0 || round.passes >= required) return true;
        return block.timestamp > round.attestationDeadline && round.fails < required;
    }

    /// @dev Whether a round in `status` committed a result (finalized, possibly rejected since).
    function _hasResult(RoundStatus status) private pure returns (bool) {
        return status == RoundStatus.Finalized || status == RoundStatus.Rejected;
    }

    function _abandonableAfter(Round storage round) private view returns (uint256) {
        uint256 end = round.mode == MODE_COMMIT_REVEAL ? round.revealDeadline : round.deadline;
        return end + round.graceSeconds;
    }

    /// @dev Whether the round may still end with its minimum submissions: false once closed or
    ///      past its submission window below it, or (commit-reveal) past the deadline with fewer
    ///      commitments than the minimum.
    function _canReachMinimum(Round storage round, RoundStatus status) private view returns (bool) {
        uint32 reachable;
        if (status == RoundStatus.Closed) {
            reachable = round.submissions;
        } else if (block.timestamp <= round.deadline) {
            return true;
        } else if (round.mode == MODE_COMMIT_REVEAL && block.timestamp <= round.revealDeadline) {
            reachable = round.commits;
        } else {
            reachable = round.submissions;
        }
        return reachable >= round.minSubmissions;
    }

    function _checkCid(string calldata cid) private pure {
        uint256 length = bytes(cid).length;
        if (length == 0) revert EmptyCid();
        if (length > MAX_CID_LENGTH) revert CidTooLong(length, MAX_CID_LENGTH);
    }

    function _checkAggregator() private view {
        if (msg.sender != aggregator()) revert NotAggregator(msg.sender);
    }

    function _commitment(address member, uint256 roundId, bytes32 updateHash, bytes32 salt)
        private
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(member, roundId, updateHash, salt));
    }

    /// @dev The position of the lowest set bit of `bits` (non-zero), by binary search.
    function _lowestSetBit(uint256 bits) private pure returns (uint256 position) {
        unchecked {
            uint256 x = bits & (0 - bits);
            if (x >> 128 != 0) { x >>= 128; position += 128; }
            if (x >> 64 != 0) { x >>= 64; position += 64; }
            if (x >> 32 != 0) { x >>= 32; position += 32; }
            if (x >> 16 != 0) { x >>= 16; position += 16; }
            if (x >> 8 != 0) { x >>= 8; position += 8; }
            if (x >> 4 != 0) { x >>= 4; position += 4; }
            if (x >> 2 != 0) { x >>= 2; position += 2; }
            if (x >> 1 != 0) position += 1;
        }
    }

    /// @dev The checks every attestation passes (an active member, so never the aggregator; a
    ///      finalized round; a verdict named on IPFS; within the window when k > 0), and the
    ///      member's bit in the round's "who attested" bitmap: one attestation per member.
    function _recordAttestation(uint256 roundId, bytes32 auditHash, string calldata auditCid)
        private
        returns (Round storage round)
    {
        MemberRecord storage member = _activeMember();
        round = _requireStatus(roundId, RoundStatus.Finalized);
        if (auditHash == bytes32(0)) revert EmptyHash();
        _checkCid(auditCid);
        if (round.attestationsRequired != 0 && block.timestamp > round.attestationDeadline) {
            revert AttestationWindowClosed(roundId, round.attestationDeadline);
        }
        uint32 index = member.index;
        mapping(uint256 => uint256) storage attested = _attested[roundId];
        uint256 bits = attested[index / 256];
        uint256 bit = 1 << (index % 256);
        if (bits & bit != 0) revert AlreadyAttested(roundId, msg.sender);
        attested[index / 256] = bits | bit;
    }
}
