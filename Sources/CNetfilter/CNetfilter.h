// CNetfilter: what Swift needs from libnftnl, libmnl and the netfilter uapi headers.
//
// Order matters: <sys/socket.h> and <netinet/in.h> come before any <linux/netfilter*.h>, and
// <linux/netfilter.h> itself stays out, or this module clashes with Glibc's definitions
// (see DESIGN.md, "Linux and Swift pitfalls"). No _GNU_SOURCE here for the same reason.
// Only static inline one-liners live here: macros Swift cannot import become functions.
#ifndef BERTH_CNETFILTER_H
#define BERTH_CNETFILTER_H

#include <stdint.h>
#include <stddef.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <linux/netlink.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netfilter/nf_conntrack_common.h>

#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/table.h>
#include <libnftnl/chain.h>
#include <libnftnl/set.h>
#include <libnftnl/rule.h>
#include <libnftnl/expr.h>

/// MNL_SOCKET_BUFFER_SIZE is a function-like macro (it calls sysconf).
static inline size_t cnetfilter_socket_buffer_size(void) { return MNL_SOCKET_BUFFER_SIZE; }

/// NLMSG_ALIGN, NFA_ALIGN-style rounding: netlink pads everything to 4 bytes.
static inline uint32_t cnetfilter_nlmsg_align(uint32_t len) { return NLMSG_ALIGN(len); }

/// NLMSG_HDRLEN is a macro over a cast; Swift sees it as an expression it cannot import.
static inline uint32_t cnetfilter_nlmsg_hdrlen(void) { return NLMSG_HDRLEN; }

/// Linux's nfnetlink message type: subsystem in the high byte, message in the low byte.
static inline uint16_t cnetfilter_nfnl_msg_type(uint8_t subsys, uint8_t msg) {
    return (uint16_t)(((uint16_t)subsys << 8) | msg);
}

/// NFT_TABLE_F_OWNER: Swift imports the enum member; keep the raw flag next to its friends.
static inline uint32_t cnetfilter_table_flag_owner(void) { return NFT_TABLE_F_OWNER; }

#endif
