// Publishing composes Relay and Netfilter.
