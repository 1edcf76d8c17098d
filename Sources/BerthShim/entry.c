// berth-proxy's C entry point: Embedded Swift has no top-level code, so main is here and calls
// the Swift program (main.swift, @_cdecl("berth_proxy_main")).
int berth_proxy_main(int argc, char **argv);
int main(int argc, char **argv) { return berth_proxy_main(argc, argv); }
