{
  "targets": [
    {
      "target_name": "splice_relay",
      "sources": ["splice-relay.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"],
      "conditions": [["OS!='linux'", { "type": "none" }]]
    }
  ]
}
