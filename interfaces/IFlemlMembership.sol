// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title FLEML consortium membership
/// @notice Who may take part: an operator admits and removes members and appoints the aggregator.
/// @dev Every member keeps a permanent index from its first admission; indices address the
///      flagged-member bitmaps of finalized rounds and survive removal and re-admission.
interface IFlemlMembership {
    /// @notice The caller is not the operator.
    error NotOperator(address account);
    /// @notice The caller is not the pending operator named by `transferOperator`.
    error NotPendingOperator(address account);
    /// @notice The caller is not an active member.
    error NotMember(address account);
    /// @notice The account is already an active member.
    error AlreadyMember(address account);
    /// @notice The zero address was given where an account is required.
    error ZeroAddress();
    /// @notice A member label must be 1 to `maxLength` bytes long.
    error InvalidLabel(uint256 length, uint256 maxLength);
    /// @notice The aggregator cannot be admitted as a member.
    error MemberIsAggregator(address account);
    /// @notice An active member cannot be appointed aggregator.
    error AggregatorIsMember(address account);

    /// @notice The operator named `newOperator` as its successor; it takes over once it accepts.
    /// @param previousOperator the current operator
    /// @param newOperator the account that may accept the role
    event OperatorTransferStarted(address indexed previousOperator, address indexed newOperator);

    /// @notice The operator role changed hands.
    /// @param previousOperator the former operator
    /// @param newOperator the new operator
    event OperatorTransferred(address indexed previousOperator, address indexed newOperator);

    /// @notice The aggregator was appointed or replaced.
    /// @param previousAggregator the former aggregator (zero if none)
    /// @param newAggregator the new aggregator
    event AggregatorSet(address indexed previousAggregator, address indexed newAggregator);

    /// @notice An account became a member (again).
    /// @param member the member's account
    /// @param index the member's permanent index (bit position in flagged bitmaps)
    /// @param label the member's short public label
    event MemberAdmitted(address indexed member, uint32 indexed index, string label);

    /// @notice A member was removed; its history (index, label, past commitments) stays.
    /// @param member the former member's account
    /// @param index the member's permanent index
    event MemberRemoved(address indexed member, uint32 indexed index);

    /// @notice Name `newOperator` as the next operator; it must call `acceptOperator`.
    /// @param newOperator the successor (zero cancels a pending transfer)
    function transferOperator(address newOperator) external;

    /// @notice Take over the operator role offered by `transferOperator`.
    function acceptOperator() external;

    /// @notice Appoint the account that opens, closes and finalizes rounds.
    /// @param newAggregator the aggregator's account; not an active member
    function setAggregator(address newAggregator) external;

    /// @notice Admit `account` as a member with a short public label (1 to 64 bytes).
    /// @param account the member's account, not the aggregator's; a removed member may be
    ///        admitted again
    /// @param label a short public name, e.g. "hospital-a"
    function admitMember(address account, string calldata label) external;

    /// @notice Remove a member. It can no longer submit; its history stays on chain.
    /// @param account the member to remove
    function removeMember(address account) external;

    /// @notice The operator's account.
    function operator() external view returns (address);

    /// @notice The account offered the operator role, if any.
    function pendingOperator() external view returns (address);

    /// @notice The aggregator's account.
    function aggregator() external view returns (address);

    /// @notice Whether `account` is an active member.
    function isMember(address account) external view returns (bool);

    /// @notice A member's (or former member's) record.
    /// @return known whether the account was ever admitted
    /// @return active whether it is a member now
    /// @return index its permanent index
    /// @return label its public label
    function memberInfo(address account)
        external
        view
        returns (bool known, bool active, uint32 index, string memory label);

    /// @notice The account that holds permanent index `index`.
    function memberAt(uint32 index) external view returns (address);

    /// @notice How many accounts were ever admitted (the number of permanent indices).
    function memberSlots() external view returns (uint32);

    /// @notice How many members are active now.
    function activeMembers() external view returns (uint32);
}
