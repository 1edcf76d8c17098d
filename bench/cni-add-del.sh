#!/bin/bash
# CNI ADD then DEL of one container with N port mappings, berth-cni (no daemon: its shared nftables
# table) and Debian's portmap (iptables-nft), interleaved, R rounds; prints each one's p50. Run it
# in a private namespace, so neither touches the host's rules:
#
#   unshare -rn bash bench/cni-add-del.sh .build/release/berth-cni 100 15
B=$1; N=${2:-1}; R=${3:-20}
maps=$(python3 -c "import json;print(json.dumps([{'hostPort':10000+i,'containerPort':80,'protocol':'tcp'} for i in range($N)]))")
prev='{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"198.18.1.2/24","interface":0}]}'
cfg() { echo "{\"cniVersion\":\"1.0.0\",\"name\":\"benchnet\",\"type\":\"$1\",\"control\":\"/tmp/none.sock\",\"snat\":true,\"runtimeConfig\":{\"portMappings\":$maps},\"prevResult\":$prev}"; }
cfg berth-cni > /tmp/cb.json; cfg portmap > /tmp/cp.json
export CNI_CONTAINERID=bench1 CNI_NETNS=/x CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni
for i in $(seq $R); do
  for p in berth portmap; do
    if [ $p = berth ]; then bin=$B; c=/tmp/cb.json; else bin=/usr/lib/cni/portmap; c=/tmp/cp.json; fi
    s=$(date +%s%N); CNI_COMMAND=ADD $bin < $c > /dev/null 2>&1 || echo "$p ADD failed"; m=$(date +%s%N)
    CNI_COMMAND=DEL $bin < $c > /dev/null 2>&1 || echo "$p DEL failed"; e=$(date +%s%N)
    echo "$p $(( (m-s)/1000 )) $(( (e-m)/1000 ))"
  done
done | python3 -c "
import sys,statistics
d={}
for l in sys.stdin:
  p,a,b=l.split(); d.setdefault(p,([],[])); d[p][0].append(int(a)); d[p][1].append(int(b))
for p,(a,b) in d.items(): print(p, \"add p50 %.1f ms, del p50 %.1f ms\" % (statistics.median(a)/1000, statistics.median(b)/1000))"
