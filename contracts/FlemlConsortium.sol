// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IFlemlRounds} from "../interfaces/IFlemlRounds.sol";
import {ConsortiumPolicy} from "./ConsortiumPolicy.sol";

/// @title FLEML consortium: membership, policy, training rounds and update commitments
/// @notice One round at a time: the aggregator opens it on the last finalized global model, each
///         active member submits one update (content hash + IPFS CID) before the deadline, or in
///         commit-reveal mode commits to it before the deadline and reveals it after; the
///         aggregator closes the round and finalizes it with the new global model, the round
///         report and the flagged members, provided the round has the policy's minimum number of
///         submissions. A round that is not finalized in time can be abandoned by anyone, so no
///         lost key can stall the consortium. Finalized rounds never change.
/// @dev Gas. A plain submission touches three storage slots, each read and written once: the
///      round's packed counters, the member's record (membership and the last rounds it submitted
///      and committed to) and the member's latest commitment. The commitment slot is reused round
///      after round, so from a member's second round on it is a non-zero to non-zero write (5,000
///      gas, not 22,100). A commit-reveal member writes a second reused slot (its latest
///      commitment) and the round's second slot (the commit count). The full history of
///      commitments is in events. CIDs and the flagged bitmap live in events; finalization
///      writes only the non-zero bitmap words (one word per 256 member slots) and reads two slots
///      per flagged member to check it submitted in the round (its record's `lastRound`).
contract FlemlConsortium is ConsortiumPolicy, IFlemlRounds {
    /// @notice Longest CID accepted, in bytes: a CIDv1 of a sha2-256 or sha3-512 digest in
    ///         base32 takes 59 to 113 characters.
    uint256 public constant MAX_CID_LENGTH = 128;
    uint256 private constant PROTOCOL_VERSION = 2;

    uint64 private _currentRound;
    uint64 private _lastFinalized;
    mapping(uint256 roundId => Round) private _rounds;
    mapping(address member => bytes32) private _latestCommitment;
    mapping(address member => bytes32) private _latestCommit;
    mapping(uint256 roundId => mapping(uint256 word => uint256)) private _flagged;

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
        if (previous != 0) {
            RoundStatus last = _rounds[previous].status;
            if (last != RoundStatus.Finalized && last != RoundStatus.Abandoned) {
                revert PreviousRoundNotFinalized(previous);
            }
        }
        if (modelHash == bytes32(0)) revert EmptyHash();
        // rounds form a chain: each trains on the model the last finalized round produced
        bytes32 base = _baseModel(previous);
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
        _lastFinalized = uint64(roundId);
        emit RoundFinalized(
            roundId, resultHash, msg.sender, resultCid, reportHash, reportCid, flaggedBitmap
        );
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
        return _baseModel(_currentRound);
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

    /// @inheritdoc IFlemlRounds
    function isFlagged(uint256 roundId, address member) external view returns (bool) {
        MemberRecord storage record = _memberRecord(member);
        if (!record.known || _rounds[roundId].status != RoundStatus.Finalized) return false;
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
        return round.status == RoundStatus.Finalized && round.resultHash == resultHash
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

    /// @dev The model the round after `latest` must train on (zero: any, for round 1).
    function _baseModel(uint256 latest) private view returns (bytes32) {
        uint64 finalized = _lastFinalized;
        if (finalized != 0) return _rounds[finalized].resultHash;
        // nothing finalized yet: every round retries round 1's model
        return latest == 0 ? bytes32(0) : _rounds[1].modelHash;
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
}
