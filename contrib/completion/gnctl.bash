# bash completion for gnctl: verbs, options, and machine names, job ids and profiles
# asked of the running gnspawnd.

_gnctl_column() {
    # The first column of a gnctl listing, without its header.
    gnctl "$@" 2>/dev/null | awk 'NR > 1 { print $1 }'
}

_gnctl() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local verbs="list snapshots jobs job update rollback build remove prune profiles status logs cancel wait"
    local verb="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            -*) ;;
            *) verb=${COMP_WORDS[i]}; break ;;
        esac
    done

    if [[ -z $verb ]]; then
        COMPREPLY=($(compgen -W "$verbs --help --version" -- "$cur"))
        return
    fi
    if [[ $prev == --profile ]]; then
        COMPREPLY=($(compgen -W "$(_gnctl_column profiles)" -- "$cur"))
        return
    fi
    if [[ $cur == -* ]]; then
        local options="--help"
        case $verb in
            list|snapshots|jobs|job|profiles|status) options+=" --json" ;;
            update) options+=" --all --scheduled --pretend --keep-failed --no-block --quiet --fail-if-busy" ;;
            build) options+=" --profile --resume --keep-failed --no-block --quiet --fail-if-busy" ;;
            rollback|remove|prune|wait) options+=" --no-block --quiet --fail-if-busy" ;;
            logs) options+=" --follow --lines" ;;
        esac
        COMPREPLY=($(compgen -W "$options" -- "$cur"))
        return
    fi
    case $verb in
        snapshots|update|rollback|remove|prune|status|build)
            COMPREPLY=($(compgen -W "$(_gnctl_column list)" -- "$cur")) ;;
        job|cancel|wait)
            COMPREPLY=($(compgen -W "$(_gnctl_column jobs)" -- "$cur")) ;;
        logs)
            COMPREPLY=($(compgen -W "$(_gnctl_column list) $(_gnctl_column jobs)" -- "$cur")) ;;
    esac
}

complete -F _gnctl gnctl
