# bash completion for vmhost (written by scripts/gen-completions)
_vmhost_completion() {
    local candidate
    COMPREPLY=()
    while IFS= read -r candidate; do
        [[ -n $candidate ]] && COMPREPLY+=("$candidate")
    done < <(env COMP_WORDS="${COMP_WORDS[*]}" COMP_CWORD="$COMP_CWORD" _VMHOST_COMPLETE=complete_bash "$1")
    return 0
}

complete -o default -F _vmhost_completion vmhost
