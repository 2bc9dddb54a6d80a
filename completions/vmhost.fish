# fish completion for vmhost (written by scripts/gen-completions)
function __vmhost_complete --argument-names action
    env _VMHOST_COMPLETE=complete_fish _TYPER_COMPLETE_FISH_ACTION=$action _TYPER_COMPLETE_ARGS=(commandline -cp) vmhost
end

complete --command vmhost --no-files --arguments "(__vmhost_complete get-args)" --condition "__vmhost_complete is-args"
